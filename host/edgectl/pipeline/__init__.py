"""The host pipeline, stages in data order: data, model, training, pruning, calibration,
quantization, export, evaluation, checkpoint, bundle_writer, build."""
