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

/// `model` mirrored on `gpu` for batches of at most `maxBatch` images; its state reaches
/// the GPU with `upload()`.
func engine(on gpu: CUDADevice, model: any Layer, optimizer: SGD, input: ModelInput, maxBatch: Int,
            labelSmoothing: Float = 0) throws -> CUDAEngine {
    guard let seq = model as? Sequential else { throw UnsupportedOnGPU(layer: "\(type(of: model))") }
    return try CUDAEngine(device: gpu, model: seq, optimizer: optimizer, imageShape: [input.channels, input.size, input.size],
                          classes: input.classes, maxBatch: maxBatch, labelSmoothing: labelSmoothing)
}

/// `trainer`'s model and optimizer on `gpu`, for `Trainer.use(device:)` (which uploads).
func engine(on gpu: CUDADevice, for trainer: Trainer) throws -> CUDAEngine {
    let e = try engine(on: gpu, model: trainer.model, optimizer: trainer.optimizer, input: trainer.input,
                       maxBatch: trainer.config.batch_size, labelSmoothing: trainer.config.label_smoothing)
    trainer.log("device: \(e.name)")
    return e
}
