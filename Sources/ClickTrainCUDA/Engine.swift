import ClickTrainCore
import ClickTrainNN
import ClickTrainTraining
import Foundation

/// The dense training step on the GPU: the model's layers mirrored on the device (cuDNN
/// convolutions, cuBLAS linear layers, our kernels for the rest), the loss and SGD there
/// too, and one synchronisation per step (reading the loss). The CPU model stays the
/// record: `download` writes the weights, momentum and batch-norm statistics back before a
/// checkpoint, and `upload` (called by `Trainer.use(device:)`, or by whoever uses the
/// engine alone) sends them to the GPU.
public final class CUDAEngine: StepDevice {
    public let device: CUDADevice
    let model: GSequential
    let store: ParameterStore
    let optimizer: SGD
    let batchNorms: [GBatchNorm]
    let labelSmoothing: Float
    let imageShape: [Int]
    let classes: Int
    private let images: DeviceBuffer, labels: DeviceBuffer, logitGrad: DeviceBuffer, stats: DeviceBuffer
    private let pinnedImages: PinnedBuffer, pinnedLabels: PinnedBuffer, pinnedStats: PinnedBuffer
    private let workspace: Workspace
    private let topLevelNames: [String]
    public var name: String { device.name }

    /// - Parameters: imageShape [C, H, W]; batches of at most `maxBatch` images.
    public init(device: CUDADevice, model: Sequential, optimizer: SGD, imageShape: [Int], classes: Int, maxBatch: Int,
                labelSmoothing: Float = 0) throws {
        try device.makeCurrent()
        self.device = device
        self.optimizer = optimizer
        self.labelSmoothing = labelSmoothing
        self.imageShape = imageShape
        self.classes = classes
        store = try ParameterStore(device, parameters: optimizer.parameters)
        workspace = Workspace(device)
        self.model = try GSequential(model, device: device, store: store, workspace: workspace)
        topLevelNames = GPUPlan.topLevelNames(model)
        batchNorms = self.model.batchNorms
        let perImage = imageShape.reduce(1, *)
        images = try DeviceBuffer(device, count: maxBatch * perImage)
        labels = try DeviceBuffer(device, count: maxBatch)
        logitGrad = try DeviceBuffer(device, count: maxBatch * classes)
        stats = try DeviceBuffer(device, count: 4)
        pinnedImages = try PinnedBuffer(device, bytes: maxBatch * perImage * 4)
        pinnedLabels = try PinnedBuffer(device, bytes: maxBatch * 4)
        pinnedStats = try PinnedBuffer(device, bytes: 16)
    }

    /// The batch into device memory through the pinned staging buffers.
    private func stage(_ x: Tensor, _ y: UnsafeBufferPointer<Int32>) throws -> GTensor {
        let n = x.shape[0]
        guard n * imageShape.reduce(1, *) * 4 <= pinnedImages.bytes, Array(x.shape.dropFirst()) == imageShape else {
            throw CUDAError(call: "batch", message: "images \(x.shape) do not fit the engine's [≤\(pinnedLabels.bytes / 4)] + \(imageShape)")
        }
        guard y.count >= n else { throw CUDAError(call: "batch", message: "\(y.count) labels for \(n) images") }
        if let bad = y.prefix(n).first(where: { $0 < 0 || Int($0) >= classes }) { throw CUDAError(call: "batch", message: "label \(bad) outside 0..<\(classes)") }
        pinnedImages.pointer.copyMemory(from: x.data, byteCount: x.count * 4)
        pinnedLabels.pointer.copyMemory(from: y.baseAddress!, byteCount: n * 4)
        try device.upload(pinnedImages.pointer, to: images.pointer, bytes: x.count * 4)
        try device.upload(pinnedLabels.pointer, to: labels.pointer, bytes: n * 4)
        return GTensor(pointer: images.pointer, shape: x.shape)
    }

    /// Loss (and, with `grad`, its gradient) of `logits` into `stats`: [loss sum, correct].
    /// Label smoothing applies to the training loss only, as on the CPU.
    private func loss(_ logits: GTensor, grad: Bool) throws {
        let n = logits.shape[0]
        try device.zero(stats.pointer, count: 4)
        try device.launch("softmax_cross_entropy", total: n,
                          [.ptr(logits.pointer), .ptr(labels.pointer), .int(n), .int(classes), .f32(grad ? labelSmoothing : 0),
                           grad ? .ptr(logitGrad.pointer) : .null, .ptr(stats.pointer)])
    }

    private func readStats() throws -> (lossSum: Double, correct: Int) {
        try device.download(stats.pointer, to: pinnedStats.pointer, bytes: 16)
        try device.synchronize()
        return (pinnedStats.pointer.load(as: Double.self), Int(pinnedStats.pointer.load(fromByteOffset: 8, as: Double.self)))
    }

    public func trainStep(images x: Tensor, labels y: UnsafeBufferPointer<Int32>, learningRate: Float,
                          hooks: ((Float) throws -> Void)?) throws -> (loss: Float, correct: Int)
    {
        try device.makeCurrent()
        let n = x.shape[0]
        let logits = try model.forward(stage(x, y), training: true)
        try loss(logits, grad: true)
        _ = try model.backward(GTensor(pointer: logitGrad.pointer, shape: [n, classes]))
        if let hooks {
            // The methods' turn, on the CPU: weights and gradients there and back.
            let (sum, _) = try readStats()
            try store.downloadValuesAndGradients()
            try hooks(Float(sum / Double(max(n, 1))))
            try store.uploadValuesAndGradients()
        }
        try device.launch("sgd_step", total: store.total, maxBlocks: 4096,
                          [.ptr(store.values.pointer), .ptr(store.grads.pointer), .ptr(store.momentum.pointer),
                           .ptr(store.decay.pointer), .ptr(store.mask.pointer), .long(store.total), .f32(learningRate),
                           .f32(optimizer.momentum), .int(optimizer.nesterov ? 1 : 0), .ptr(stats.pointer)])
        let (sum, correct) = try readStats()
        return (Float(sum / Double(max(n, 1))), correct)
    }

    public func evaluate(images x: Tensor, labels y: UnsafeBufferPointer<Int32>) throws -> (lossSum: Double, correct: Int) {
        try device.makeCurrent()
        let logits = try model.forward(stage(x, y), training: false)
        try loss(logits, grad: false)
        return try readStats()
    }

    /// Logits of one batch in evaluation mode (the checks compare them with the CPU's).
    package func logits(_ x: Tensor) throws -> [Float] { try stageOutputs(x).last!.values }

    /// The output of each of the model's top-level layers in evaluation mode, named by the
    /// CPU layer it ends with (a batch norm and the ReLU after it are one layer here): where
    /// the GPU and the CPU part, when they do.
    package func stageOutputs(_ x: Tensor) throws -> [(name: String, values: [Float])] {
        try device.makeCurrent()
        let zeros = [Int32](repeating: 0, count: x.shape[0])
        var h = try zeros.withUnsafeBufferPointer { try stage(x, $0) }
        var out: [(String, [Float])] = []
        for (name, layer) in zip(topLevelNames, model.layers) {
            h = try layer.forward(h, training: false)
            out.append((name, try device.array(h.pointer, count: h.count)))
        }
        return out
    }

    public func download() throws {
        try device.makeCurrent()
        try store.download(optimizer)
        for bn in batchNorms { try bn.download() }
        try device.synchronize()
    }

    public func upload() throws {
        try device.makeCurrent()
        try store.upload(optimizer)
        for bn in batchNorms { try bn.upload() }
        try device.synchronize()
    }
}
