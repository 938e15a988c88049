import ArgumentParser
import ClickTrainCore
import ClickTrainCUDA
import ClickTrainNN
import ClickTrainTraining

/// `--device`: where the arithmetic runs.
enum DeviceKind: String, ExpressibleByArgument, CaseIterable {
    case cpu, cuda
}

let deviceHelp = ArgumentHelp("cpu, or cuda: training (dense, clicktrain, pat) and evaluation on an NVIDIA GPU (the driver, NVRTC, cuBLAS and cuDNN are loaded at run time).")

/// The GPU for `--device cuda` (nil for cpu); a missing library throws a one-line error.
func openDevice(_ kind: DeviceKind) throws -> CUDADevice? {
    kind == .cuda ? try CUDADevice() : nil
}

/// Throws, naming the layer, when the zoo model `name` has a layer the GPU does not run
/// (the layers' kinds do not depend on the input's size).
func checkRunsOnGPU(model name: String) throws {
    _ = try GPUPlan.of(ModelZoo.make(name, input: ModelInput(channels: 1, size: 32, classes: 2), seed: 0))
}

/// `model` mirrored on `gpu` for batches of at most `maxBatch` images.
func engine(on gpu: CUDADevice, model: any Layer, optimizer: SGD, input: ModelInput, maxBatch: Int,
            labelSmoothing: Float = 0) throws -> CUDAEngine {
    guard let seq = model as? Sequential else { throw UnsupportedOnGPU(layer: "\(type(of: model))") }
    return try CUDAEngine(device: gpu, model: seq, optimizer: optimizer, imageShape: [input.channels, input.size, input.size],
                          classes: input.classes, maxBatch: maxBatch, labelSmoothing: labelSmoothing)
}

/// Moves `trainer`'s steps and evaluation onto `gpu`, if given.
func attach(_ gpu: CUDADevice?, to trainer: Trainer) throws {
    guard let gpu else { return }
    let e = try engine(on: gpu, model: trainer.model, optimizer: trainer.optimizer, input: trainer.input,
                       maxBatch: trainer.config.batch_size, labelSmoothing: trainer.config.label_smoothing)
    try trainer.use(device: e)
    trainer.log("device: \(e.name)")
}
