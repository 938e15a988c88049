import ClickTrainCore
import ClickTrainNN
import Foundation

/// A view of device memory: its address and NCHW shape.
struct GTensor {
    var pointer: DevicePointer
    var shape: [Int]
    var count: Int { shape.reduce(1, *) }
}

/// A device buffer that grows to the largest size asked for (the last batch of an
/// evaluation is smaller and uses the front of it).
final class Scratch {
    private var buffer: DeviceBuffer?

    func get(_ device: CUDADevice, count: Int) throws -> DevicePointer {
        if let b = buffer, b.count >= count { return b.pointer }
        if buffer != nil { try device.synchronize() }  // nothing in flight may still use the old one
        buffer = nil
        buffer = try DeviceBuffer(device, count: count)
        return buffer!.pointer
    }

    func tensor(_ device: CUDADevice, _ shape: [Int]) throws -> GTensor {
        GTensor(pointer: try get(device, count: shape.reduce(1, *)), shape: shape)
    }
}

/// A layer of the model on the GPU: its parameters live in the `ParameterStore`, its
/// activations in its own device buffers.
protocol GPULayer: AnyObject {
    func forward(_ x: GTensor, training: Bool) throws -> GTensor
    /// dL/dx from dL/dy; fills the parameters' gradients. Returns dy itself where the input
    /// gradient is not needed (the model's first layer).
    func backward(_ dy: GTensor) throws -> GTensor
}

/// Every parameter of the model in flat device buffers (values, gradients, momentum, each
/// element's weight decay and mask): the optimizer is one kernel over all of them.
final class ParameterStore {
    let device: CUDADevice
    let parameters: [Parameter]
    private(set) var offsets: [ObjectIdentifier: Int] = [:]
    let total: Int
    let values: DeviceBuffer, grads: DeviceBuffer, momentum: DeviceBuffer, decay: DeviceBuffer, mask: DeviceBuffer

    init(_ device: CUDADevice, parameters: [Parameter]) throws {
        self.device = device
        self.parameters = parameters
        var at = 0
        for p in parameters {
            offsets[ObjectIdentifier(p)] = at
            at += (p.value.count + 63) / 64 * 64  // 256-byte aligned, as cuDNN likes its filters
        }
        total = at
        values = try DeviceBuffer(device, count: total)
        grads = try DeviceBuffer(device, count: total)
        momentum = try DeviceBuffer(device, count: total)
        decay = try DeviceBuffer(device, count: total)
        mask = try DeviceBuffer(device, count: total)
        for b in [values, grads, momentum, decay, mask] { try device.zero(b.pointer, count: total) }
    }

    func value(_ p: Parameter) -> DevicePointer { values.at(offsets[ObjectIdentifier(p)]!) }
    func grad(_ p: Parameter) -> DevicePointer { grads.at(offsets[ObjectIdentifier(p)]!) }

    /// Host → device: values, momentum, masks and the decay of `optimizer`.
    func upload(_ optimizer: SGD) throws {
        for (p, buf) in zip(optimizer.parameters, optimizer.momentumBuffers) {
            let at = offsets[ObjectIdentifier(p)]!, n = p.value.count
            try device.upload(p.value.data, to: values.at(at), bytes: n * 4)
            try device.upload(buf.data, to: momentum.at(at), bytes: n * 4)
            let wd = (p.isBiasOrNorm && !optimizer.decayBiasAndNorm) ? 0 : optimizer.weightDecay
            let m = p.mask?.array ?? [Float](repeating: 1, count: n)
            let d = [Float](repeating: wd, count: n)
            try m.withUnsafeBytes { try device.upload($0.baseAddress!, to: mask.at(at), bytes: n * 4) }
            try d.withUnsafeBytes { try device.upload($0.baseAddress!, to: decay.at(at), bytes: n * 4) }
            try device.synchronize()  // the host arrays go out of scope
        }
    }

    /// Device → host: each parameter's value and gradient (the methods' hooks read them).
    func downloadValuesAndGradients() throws {
        for p in parameters {
            let at = offsets[ObjectIdentifier(p)]!, n = p.value.count
            try device.download(values.at(at), to: p.value.data, bytes: n * 4)
            try device.download(grads.at(at), to: p.grad.data, bytes: n * 4)
        }
        try device.synchronize()
    }

    /// Host → device: values and gradients as the hooks left them.
    func uploadValuesAndGradients() throws {
        for p in parameters {
            let at = offsets[ObjectIdentifier(p)]!, n = p.value.count
            try device.upload(p.value.data, to: values.at(at), bytes: n * 4)
            try device.upload(p.grad.data, to: grads.at(at), bytes: n * 4)
        }
        try device.synchronize()  // the CPU may change them again right after
    }

    /// Device → host: values and momentum.
    func download(_ optimizer: SGD) throws {
        for (p, buf) in zip(optimizer.parameters, optimizer.momentumBuffers) {
            let at = offsets[ObjectIdentifier(p)]!, n = p.value.count
            try device.download(values.at(at), to: p.value.data, bytes: n * 4)
            try device.download(momentum.at(at), to: buf.data, bytes: n * 4)
        }
        try device.synchronize()
    }
}

/// Convolution through cuDNN (NCHW float, FMA math: no TF32, so results match the CPU's to
/// float rounding), bias by our kernels. A pruned weight runs dense here, its zeros kept by
/// the masked update. The fastest algorithm per input shape is found
/// once by cuDNN's own trial.
final class GConv: GPULayer {
    let device: CUDADevice
    let store: ParameterStore
    let conv: Conv2d
    let needsInputGradient: Bool
    private let filter: OpaquePointer?
    private let convDesc: OpaquePointer?
    private struct Plan {
        var x: OpaquePointer?, y: OpaquePointer?
        var fwd: Int32, bwdData: Int32, bwdFilter: Int32
    }
    private var plans: [[Int]: Plan] = [:]
    private let output = Scratch(), gradInput = Scratch()
    private let workspace: Workspace
    private var input: GTensor?

    init(_ conv: Conv2d, device: CUDADevice, store: ParameterStore, workspace: Workspace) throws {
        self.device = device
        self.store = store
        self.conv = conv
        self.workspace = workspace
        needsInputGradient = conv.needsInputGradient
        let api = device.cudnn
        var f: OpaquePointer?, c: OpaquePointer?
        try api.check(api.cudnnCreateFilterDescriptor(&f), "cudnnCreateFilterDescriptor")
        try api.check(api.cudnnSetFilter4dDescriptor(f, 0, 0, Int32(conv.outChannels), Int32(conv.inChannels),
                                                     Int32(conv.kernelSize), Int32(conv.kernelSize)),
                      "cudnnSetFilter4dDescriptor")
        try api.check(api.cudnnCreateConvolutionDescriptor(&c), "cudnnCreateConvolutionDescriptor")
        try api.check(api.cudnnSetConvolution2dDescriptor(c, Int32(conv.padding), Int32(conv.padding), Int32(conv.stride),
                                                          Int32(conv.stride), 1, 1, 1, 0),
                      "cudnnSetConvolution2dDescriptor")
        try api.check(api.cudnnSetConvolutionMathType(c, 3), "cudnnSetConvolutionMathType(FMA)")
        filter = f
        convDesc = c
    }

    private func tensorDescriptor(_ s: [Int]) throws -> OpaquePointer? {
        let api = device.cudnn
        var d: OpaquePointer?
        try api.check(api.cudnnCreateTensorDescriptor(&d), "cudnnCreateTensorDescriptor")
        try api.check(api.cudnnSetTensor4dDescriptor(d, 0, 0, Int32(s[0]), Int32(s[1]), Int32(s[2]), Int32(s[3])),
                      "cudnnSetTensor4dDescriptor \(s)")
        return d
    }

    /// The first algorithm cuDNN's trial lists as working without tensor-op math (perf
    /// records: algo at byte 0, status at 4, memory at 16, math type at 28; 48 bytes each).
    private func pick(_ find: (Int32, UnsafeMutablePointer<Int32>, UnsafeMutableRawPointer) -> Int32,
                      _ call: String) throws -> (algo: Int32, memory: Int) {
        let records = UnsafeMutableRawPointer.allocate(byteCount: 16 * 48, alignment: 8)
        defer { records.deallocate() }
        var n: Int32 = 0
        try device.cudnn.check(find(16, &n, records), call)
        for i in 0..<Int(n) {
            let r = records + i * 48
            let status = r.load(fromByteOffset: 4, as: Int32.self), math = r.load(fromByteOffset: 28, as: Int32.self)
            if status == 0 && math != 1 && math != 2 {
                return (r.load(as: Int32.self), r.load(fromByteOffset: 16, as: Int.self))
            }
        }
        throw CUDAError(call: call, message: "no algorithm for conv \(conv.inChannels)->\(conv.outChannels)")
    }

    private func plan(for x: [Int]) throws -> Plan {
        if let p = plans[x] { return p }
        let api = device.cudnn, h = device.cudnnHandle
        let xd = try tensorDescriptor(x), yd = try tensorDescriptor(conv.outputShape(for: x))
        let f = try pick({ api.cudnnFindConvolutionForwardAlgorithm(h, xd, filter, convDesc, yd, $0, $1, $2) },
                         "cudnnFindConvolutionForwardAlgorithm")
        let d = try pick({ api.cudnnFindConvolutionBackwardDataAlgorithm(h, filter, yd, convDesc, xd, $0, $1, $2) },
                         "cudnnFindConvolutionBackwardDataAlgorithm")
        let w = try pick({ api.cudnnFindConvolutionBackwardFilterAlgorithm(h, xd, yd, convDesc, filter, $0, $1, $2) },
                         "cudnnFindConvolutionBackwardFilterAlgorithm")
        try workspace.reserve(max(f.memory, d.memory, w.memory))
        let p = Plan(x: xd, y: yd, fwd: f.algo, bwdData: d.algo, bwdFilter: w.algo)
        plans[x] = p
        return p
    }

    func forward(_ x: GTensor, training: Bool) throws -> GTensor {
        let p = try plan(for: x.shape)
        let y = try output.tensor(device, conv.outputShape(for: x.shape))
        var one: Float = 1, zero: Float = 0
        try device.cudnn.check(device.cudnn.cudnnConvolutionForward(
            device.cudnnHandle, &one, p.x, raw(x.pointer), filter, raw(store.value(conv.weight)), convDesc, p.fwd,
            raw(workspace.pointer), workspace.bytes, &zero, p.y, raw(y.pointer)), "cudnnConvolutionForward")
        if let b = conv.bias {
            try device.launch("bias_add", total: y.count, [.ptr(y.pointer), .ptr(store.value(b)), .int(y.shape[1]),
                                                            .int(y.shape[2] * y.shape[3]), .long(y.count)])
        }
        input = x
        return y
    }

    func backward(_ dy: GTensor) throws -> GTensor {
        guard let x = input else { throw CUDAError(call: "conv backward", message: "no forward") }
        let p = try plan(for: x.shape)
        var one: Float = 1, zero: Float = 0
        try device.cudnn.check(device.cudnn.cudnnConvolutionBackwardFilter(
            device.cudnnHandle, &one, p.x, raw(x.pointer), p.y, raw(dy.pointer), convDesc, p.bwdFilter,
            raw(workspace.pointer), workspace.bytes, &zero, filter, raw(store.grad(conv.weight))),
            "cudnnConvolutionBackwardFilter")
        if let b = conv.bias {
            try device.launch("row_sums", grid: (dy.shape[1], 1), block: 256,
                              [.ptr(dy.pointer), .int(dy.shape[0]), .int(dy.shape[1]), .int(dy.shape[2] * dy.shape[3]),
                               .ptr(store.grad(b))])
        }
        guard needsInputGradient else { return dy }
        let dx = try gradInput.tensor(device, x.shape)
        try device.cudnn.check(device.cudnn.cudnnConvolutionBackwardData(
            device.cudnnHandle, &one, filter, raw(store.value(conv.weight)), p.y, raw(dy.pointer), convDesc, p.bwdData,
            raw(workspace.pointer), workspace.bytes, &zero, p.x, raw(dx.pointer)), "cudnnConvolutionBackwardData")
        return dx
    }
}

/// The convolutions' shared cuDNN workspace.
final class Workspace {
    let device: CUDADevice
    private let scratch = Scratch()
    private(set) var pointer: DevicePointer = 0
    private(set) var bytes = 0

    init(_ device: CUDADevice) { self.device = device }

    func reserve(_ n: Int) throws {
        guard n > bytes else { return }
        pointer = try scratch.get(device, count: (n + 3) / 4)
        bytes = n
    }
}

/// Batch norm, with the ReLU after it fused when `relu` (forward and backward).
final class GBatchNorm: GPULayer {
    let device: CUDADevice
    let store: ParameterStore
    let bn: BatchNorm2d
    let relu: Bool
    let needsInputGradient: Bool
    let runningMean: DeviceBuffer, runningVar: DeviceBuffer
    private let mean: DeviceBuffer, invStd: DeviceBuffer, sums: DeviceBuffer
    private let output = Scratch(), gradInput = Scratch()
    private var input: GTensor?, saved: GTensor?
    /// Training forwards since the last download (`num_batches_tracked`).
    var batchesTracked: Int64 = 0

    init(_ bn: BatchNorm2d, relu: Bool, device: CUDADevice, store: ParameterStore) throws {
        self.device = device
        self.store = store
        self.bn = bn
        self.relu = relu
        needsInputGradient = bn.needsInputGradient
        runningMean = try device.buffer(from: bn.runningMean)
        runningVar = try device.buffer(from: bn.runningVar)
        mean = try DeviceBuffer(device, count: bn.channels)
        invStd = try DeviceBuffer(device, count: bn.channels)
        sums = try DeviceBuffer(device, count: 4 * bn.channels)  // 2 doubles per channel
    }

    private func splits(_ m: Int) -> Int { max(1, min(m / 4096, 128)) }

    func forward(_ x: GTensor, training: Bool) throws -> GTensor {
        let n = x.shape[0], c = x.shape[1], hw = x.count / max(n * c, 1), m = n * hw
        let y = try output.tensor(device, x.shape)
        if training {
            try device.zero(sums.pointer, count: 4 * c)
            try device.launch("channel_sums", grid: (splits(m), c), block: 256,
                              [.ptr(x.pointer), .int(n), .int(c), .int(hw), .ptr(sums.pointer)])
            batchesTracked += 1
        }
        try device.launch("bn_finalize", total: c, [.ptr(sums.pointer), .int(c), .long(m), .f32(bn.momentum), .f32(bn.eps),
                                                    .int(training ? 1 : 0), .ptr(mean.pointer), .ptr(invStd.pointer),
                                                    .ptr(runningMean.pointer), .ptr(runningVar.pointer)])
        try device.launch("bn_apply", total: x.count,
                          [.ptr(x.pointer), .ptr(y.pointer), .ptr(mean.pointer), .ptr(invStd.pointer),
                           .ptr(store.value(bn.weight)), .ptr(store.value(bn.bias)), .int(c), .int(hw), .long(x.count),
                           .int(relu ? 1 : 0)])
        input = x
        saved = y
        return y
    }

    func backward(_ dy: GTensor) throws -> GTensor {
        guard let x = input, let y = saved else { throw CUDAError(call: "batch norm backward", message: "no forward") }
        let n = x.shape[0], c = x.shape[1], hw = x.count / max(n * c, 1), m = n * hw
        try device.zero(sums.pointer, count: 4 * c)
        let yArg: KernelArg = relu ? .ptr(y.pointer) : .null
        try device.launch("bn_backward_sums", grid: (splits(m), c), block: 256,
                          [.ptr(x.pointer), yArg, .ptr(dy.pointer), .ptr(mean.pointer), .ptr(invStd.pointer), .int(n),
                           .int(c), .int(hw), .ptr(sums.pointer)])
        let dx = needsInputGradient ? try gradInput.tensor(device, x.shape) : GTensor(pointer: 0, shape: x.shape)
        try device.launch("bn_backward_apply", total: needsInputGradient ? x.count : 1,
                          [.ptr(x.pointer), yArg, .ptr(dy.pointer), .ptr(mean.pointer), .ptr(invStd.pointer),
                           .ptr(store.value(bn.weight)), .ptr(sums.pointer), .int(c), .int(hw), .long(x.count), .long(m),
                           .ptr(dx.pointer), .ptr(store.grad(bn.weight)), .ptr(store.grad(bn.bias))])
        return needsInputGradient ? dx : dy
    }

    /// Running statistics and the batch counter back into the CPU layer.
    func download() throws {
        try device.download(runningMean.pointer, to: bn.runningMean.data, bytes: bn.channels * 4)
        try device.download(runningVar.pointer, to: bn.runningVar.data, bytes: bn.channels * 4)
        bn.numBatchesTracked.value += batchesTracked
        batchesTracked = 0
    }

    func upload() throws {
        try device.upload(bn.runningMean.data, to: runningMean.pointer, bytes: bn.channels * 4)
        try device.upload(bn.runningVar.data, to: runningVar.pointer, bytes: bn.channels * 4)
        batchesTracked = 0
    }
}

final class GReLU: GPULayer {
    let device: CUDADevice
    let needsInputGradient: Bool
    private let output = Scratch(), gradInput = Scratch()
    private var saved: GTensor?

    init(_ relu: ReLU, device: CUDADevice) {
        self.device = device
        needsInputGradient = relu.needsInputGradient
    }

    func forward(_ x: GTensor, training: Bool) throws -> GTensor {
        let y = try output.tensor(device, x.shape)
        try device.launch("relu_forward", total: x.count, [.ptr(x.pointer), .ptr(y.pointer), .long(x.count)])
        saved = y
        return y
    }

    func backward(_ dy: GTensor) throws -> GTensor {
        guard needsInputGradient, let y = saved else { return dy }
        let dx = try gradInput.tensor(device, y.shape)
        try device.launch("relu_backward", total: y.count, [.ptr(y.pointer), .ptr(dy.pointer), .ptr(dx.pointer),
                                                            .long(y.count)])
        return dx
    }
}

final class GMaxPool: GPULayer {
    let device: CUDADevice
    let pool: MaxPool2d
    let needsInputGradient: Bool
    private let output = Scratch(), indices = Scratch(), gradInput = Scratch()
    private var inputShape: [Int] = []

    init(_ pool: MaxPool2d, device: CUDADevice) {
        self.device = device
        self.pool = pool
        needsInputGradient = pool.needsInputGradient
    }

    func forward(_ x: GTensor, training: Bool) throws -> GTensor {
        let y = try output.tensor(device, pool.outputShape(for: x.shape))
        let idx = try indices.get(device, count: y.count)
        try device.launch("maxpool_forward", total: y.count,
                          [.ptr(x.pointer), .ptr(y.pointer), .ptr(idx), .int(x.shape[2]), .int(x.shape[3]), .int(y.shape[2]),
                           .int(y.shape[3]), .int(pool.kernelSize), .int(pool.stride), .int(pool.padding), .long(y.count)])
        inputShape = x.shape
        return y
    }

    func backward(_ dy: GTensor) throws -> GTensor {
        guard needsInputGradient else { return dy }
        let dx = try gradInput.tensor(device, inputShape)
        try device.zero(dx.pointer, count: dx.count)
        try device.launch("maxpool_backward", total: dy.count,
                          [.ptr(dy.pointer), .ptr(try indices.get(device, count: dy.count)), .ptr(dx.pointer),
                           .int(inputShape[2]), .int(inputShape[3]), .int(dy.shape[2]), .int(dy.shape[3]), .long(dy.count)])
        return dx
    }
}

final class GGlobalAvgPool: GPULayer {
    let device: CUDADevice
    let needsInputGradient: Bool
    private let output = Scratch(), gradInput = Scratch()
    private var inputShape: [Int] = []

    init(_ pool: GlobalAvgPool, device: CUDADevice) {
        self.device = device
        needsInputGradient = pool.needsInputGradient
    }

    func forward(_ x: GTensor, training: Bool) throws -> GTensor {
        let y = try output.tensor(device, [x.shape[0], x.shape[1]])
        try device.launch("global_avgpool_forward", total: y.count,
                          [.ptr(x.pointer), .ptr(y.pointer), .int(x.shape[2] * x.shape[3]), .long(y.count)])
        inputShape = x.shape
        return y
    }

    func backward(_ dy: GTensor) throws -> GTensor {
        guard needsInputGradient else { return dy }
        let dx = try gradInput.tensor(device, inputShape)
        try device.launch("global_avgpool_backward", total: dx.count,
                          [.ptr(dy.pointer), .ptr(dx.pointer), .int(inputShape[2] * inputShape[3]), .long(dx.count)])
        return dx
    }
}

final class GFlatten: GPULayer {
    private var inputShape: [Int] = []

    func forward(_ x: GTensor, training: Bool) throws -> GTensor {
        inputShape = x.shape
        return GTensor(pointer: x.pointer, shape: [x.shape[0], x.count / max(x.shape[0], 1)])
    }

    func backward(_ dy: GTensor) throws -> GTensor { GTensor(pointer: dy.pointer, shape: inputShape) }
}

/// y = x Wᵀ + b through cuBLAS (column-major: x [N, in] row-major is in × N).
final class GLinear: GPULayer {
    let device: CUDADevice
    let store: ParameterStore
    let linear: Linear
    let needsInputGradient: Bool
    private let output = Scratch(), gradInput = Scratch()
    private var input: GTensor?

    init(_ linear: Linear, device: CUDADevice, store: ParameterStore) {
        self.device = device
        self.store = store
        self.linear = linear
        needsInputGradient = linear.needsInputGradient
    }

    private func gemm(_ ta: Int32, _ tb: Int32, _ m: Int, _ n: Int, _ k: Int, _ a: DevicePointer, _ lda: Int,
                      _ b: DevicePointer, _ ldb: Int, _ c: DevicePointer, _ ldc: Int) throws {
        var one: Float = 1, zero: Float = 0
        try device.cublas.check(device.cublas.cublasSgemm(device.cublasHandle, ta, tb, Int32(m), Int32(n), Int32(k), &one,
                                                          raw(a), Int32(lda), raw(b), Int32(ldb), &zero, raw(c),
                                                          Int32(ldc)), "cublasSgemm")
    }

    func forward(_ x: GTensor, training: Bool) throws -> GTensor {
        let n = x.shape[0], i = linear.inFeatures, o = linear.outFeatures
        let y = try output.tensor(device, [n, o])
        try gemm(1, 0, o, n, i, store.value(linear.weight), i, x.pointer, i, y.pointer, o)
        if let b = linear.bias {
            try device.launch("bias_add", total: y.count, [.ptr(y.pointer), .ptr(store.value(b)), .int(o), .int(1),
                                                            .long(y.count)])
        }
        input = x
        return y
    }

    func backward(_ dy: GTensor) throws -> GTensor {
        guard let x = input else { throw CUDAError(call: "linear backward", message: "no forward") }
        let n = x.shape[0], i = linear.inFeatures, o = linear.outFeatures
        try gemm(0, 1, i, o, n, x.pointer, i, dy.pointer, o, store.grad(linear.weight), i)
        if let b = linear.bias {
            try device.launch("row_sums", grid: (o, 1), block: 256,
                              [.ptr(dy.pointer), .int(n), .int(o), .int(1), .ptr(store.grad(b))])
        }
        guard needsInputGradient else { return dy }
        let dx = try gradInput.tensor(device, x.shape)
        try gemm(0, 0, i, n, o, store.value(linear.weight), i, dy.pointer, o, dx.pointer, i)
        return dx
    }
}

/// conv-bn-relu-conv-bn, plus the shortcut (identity or its projection), then ReLU.
final class GBasicBlock: GPULayer {
    let device: CUDADevice
    let needsInputGradient: Bool
    let conv1: GConv, bn1: GBatchNorm, conv2: GConv, bn2: GBatchNorm
    let shortcut: GSequential?
    private let output = Scratch(), gradSum = Scratch(), gradInput = Scratch()
    private var saved: GTensor?

    init(_ block: BasicBlock, device: CUDADevice, store: ParameterStore, workspace: Workspace) throws {
        self.device = device
        needsInputGradient = block.conv1.needsInputGradient
        conv1 = try GConv(block.conv1, device: device, store: store, workspace: workspace)
        bn1 = try GBatchNorm(block.bn1, relu: true, device: device, store: store)
        conv2 = try GConv(block.conv2, device: device, store: store, workspace: workspace)
        bn2 = try GBatchNorm(block.bn2, relu: false, device: device, store: store)
        shortcut = try block.shortcut.map { try GSequential($0, device: device, store: store, workspace: workspace) }
    }

    func forward(_ x: GTensor, training: Bool) throws -> GTensor {
        let main = try bn2.forward(conv2.forward(bn1.forward(conv1.forward(x, training: training), training: training),
                                                 training: training), training: training)
        let short = try shortcut?.forward(x, training: training) ?? x
        let y = try output.tensor(device, main.shape)
        try device.launch("add_relu_forward", total: y.count, [.ptr(main.pointer), .ptr(short.pointer), .ptr(y.pointer),
                                                               .long(y.count)])
        saved = y
        return y
    }

    func backward(_ dy: GTensor) throws -> GTensor {
        guard let y = saved else { throw CUDAError(call: "block backward", message: "no forward") }
        let g = try gradSum.tensor(device, y.shape)
        try device.launch("relu_backward", total: y.count, [.ptr(y.pointer), .ptr(dy.pointer), .ptr(g.pointer),
                                                            .long(y.count)])
        let dMain = try conv1.backward(bn1.backward(conv2.backward(bn2.backward(g))))
        let dShort = try shortcut?.backward(g) ?? g
        guard needsInputGradient else { return dy }
        let dx = try gradInput.tensor(device, dMain.shape)
        try device.launch("add", total: dx.count, [.ptr(dMain.pointer), .ptr(dShort.pointer), .ptr(dx.pointer),
                                                   .long(dx.count)])
        return dx
    }

    var batchNorms: [GBatchNorm] { [bn1, bn2] + (shortcut?.batchNorms ?? []) }
}

/// A model unsupported on the GPU: one line naming the layer.
public struct UnsupportedOnGPU: Error, CustomStringConvertible {
    public let layer: String
    public init(layer: String) { self.layer = layer }
    public var description: String { "--device cuda: layer '\(layer)' does not run on the GPU yet" }
}

/// How a model's layers map onto the GPU layers, decided without a GPU: a batch norm
/// followed by a ReLU becomes one node; anything else than the library's conv, batch
/// norm, ReLU, max pool, global average pool, flatten, linear, basic block and sequential
/// is refused by name.
package indirect enum GPUPlan {
    case sequential([GPUPlan])
    case conv(Conv2d)
    case batchNorm(BatchNorm2d, relu: Bool)
    case relu(ReLU)
    case maxPool(MaxPool2d)
    case globalAvgPool(GlobalAvgPool)
    case flatten
    case linear(Linear)
    case basicBlock(BasicBlock)

    package static func of(_ seq: Sequential, prefix: String = "") throws -> GPUPlan {
        var out: [GPUPlan] = []
        let items = seq.layers
        var i = 0
        while i < items.count {
            let (name, layer) = items[i]
            let path = prefix.isEmpty ? name : prefix + "." + name
            switch layer {
            case let s as Sequential: out.append(try of(s, prefix: path))
            case let c as Conv2d: out.append(.conv(c))
            case let b as BatchNorm2d:
                let fuse = i + 1 < items.count && items[i + 1].1 is ReLU
                out.append(.batchNorm(b, relu: fuse))
                if fuse { i += 1 }
            case let r as ReLU: out.append(.relu(r))
            case let p as MaxPool2d: out.append(.maxPool(p))
            case let p as GlobalAvgPool: out.append(.globalAvgPool(p))
            case is Flatten: out.append(.flatten)
            case let l as Linear: out.append(.linear(l))
            case let b as BasicBlock: out.append(.basicBlock(b))
            default: throw UnsupportedOnGPU(layer: "\(path) (\(type(of: layer)))")
            }
            i += 1
        }
        return .sequential(out)
    }

    /// The name of the last layer each top-level node of `seq` covers.
    package static func topLevelNames(_ seq: Sequential) -> [String] {
        var names: [String] = []
        var i = 0
        while i < seq.layers.count {
            if seq.layers[i].1 is BatchNorm2d, i + 1 < seq.layers.count, seq.layers[i + 1].1 is ReLU { i += 1 }
            names.append(seq.layers[i].0)
            i += 1
        }
        return names
    }

    /// The nodes in order, one word each ("conv", "bn+relu", "block", ...), nested
    /// sequentials flattened: what the tests compare.
    package var kinds: [String] {
        switch self {
        case .sequential(let items): return items.flatMap(\.kinds)
        case .conv: return ["conv"]
        case .batchNorm(_, let relu): return [relu ? "bn+relu" : "bn"]
        case .relu: return ["relu"]
        case .maxPool: return ["maxpool"]
        case .globalAvgPool: return ["avgpool"]
        case .flatten: return ["flatten"]
        case .linear: return ["linear"]
        case .basicBlock(let b): return [b.shortcut == nil ? "block" : "block+projection"]
        }
    }
}

/// The layers in order; a batch norm followed by a ReLU runs as one layer.
final class GSequential: GPULayer {
    let layers: [any GPULayer]

    convenience init(_ seq: Sequential, device: CUDADevice, store: ParameterStore, workspace: Workspace) throws {
        try self.init(plan: GPUPlan.of(seq), device: device, store: store, workspace: workspace)
    }

    init(plan: GPUPlan, device: CUDADevice, store: ParameterStore, workspace: Workspace) throws {
        guard case .sequential(let items) = plan else { throw CUDAError(call: "plan", message: "not a sequential") }
        layers = try items.map { node -> any GPULayer in
            switch node {
            case .sequential(let inner):
                return try GSequential(plan: .sequential(inner), device: device, store: store, workspace: workspace)
            case .conv(let c): return try GConv(c, device: device, store: store, workspace: workspace)
            case .batchNorm(let b, let relu): return try GBatchNorm(b, relu: relu, device: device, store: store)
            case .relu(let r): return GReLU(r, device: device)
            case .maxPool(let p): return GMaxPool(p, device: device)
            case .globalAvgPool(let p): return GGlobalAvgPool(p, device: device)
            case .flatten: return GFlatten()
            case .linear(let l): return GLinear(l, device: device, store: store)
            case .basicBlock(let b): return try GBasicBlock(b, device: device, store: store, workspace: workspace)
            }
        }
    }

    func forward(_ x: GTensor, training: Bool) throws -> GTensor {
        var h = x
        for l in layers { h = try l.forward(h, training: training) }
        return h
    }

    func backward(_ dy: GTensor) throws -> GTensor {
        var g = dy
        for l in layers.reversed() { g = try l.backward(g) }
        return g
    }

    var batchNorms: [GBatchNorm] {
        layers.flatMap { l -> [GBatchNorm] in
            switch l {
            case let b as GBatchNorm: return [b]
            case let s as GSequential: return s.batchNorms
            case let b as GBasicBlock: return b.batchNorms
            default: return []
            }
        }
    }
}
