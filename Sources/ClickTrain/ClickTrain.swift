// One import for an application: models and layers, SGD and schedules, data sets,
// pruning methods, the trainer and a hand-written step, safetensors and ONNX files.
// Each module stays importable on its own; the kernels behind them are not public.
@_exported import ClickTrainCore
@_exported import ClickTrainData
@_exported import ClickTrainNN
@_exported import ClickTrainPruning
@_exported import ClickTrainSparse
@_exported import ClickTrainTraining
