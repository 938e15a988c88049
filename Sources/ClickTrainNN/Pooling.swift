import ClickTrainCore

/// Max pooling (`torch.nn.MaxPool2d`, floor mode): [N, C, H, W] → [N, C, H', W'] with
/// H' = (H + 2·padding − kernelSize) / stride + 1 (stride defaults to the kernel size).
/// 2x2 windows of stride 2 also pool channel-blocked activations, in their layout.
public final class MaxPool2d: BlockedLayoutLayer {
    public let kernelSize: Int, stride: Int, padding: Int
    public var isTraining = true
    public var needsInputGradient = true
    package var acceptsBlocked: Bool { kernelSize == 2 && stride == 2 && padding == 0 }
    package var mayEmitBlocked = false
    private var edge = OutputEdge()
    private var inputBlock = 0
    private var outputs = BufferCache()
    private var gradInputs = BufferCache()
    private var argmax: UnsafeMutablePointer<Int32>?
    private var argmaxCount = 0
    private var inputShape: [Int] = []

    public init(kernelSize: Int, stride: Int? = nil, padding: Int = 0) {
        self.kernelSize = kernelSize
        self.stride = stride ?? kernelSize
        self.padding = padding
    }
    deinit { argmax?.deallocate() }

    public func outputShape(for s: [Int]) -> [Int] {
        precondition(s.count == 4, "MaxPool2d: input \(s), expected [N, C, H, W]")
        return [s[0], s[1], pooledSize(s[2], kernel: kernelSize, stride: stride, padding: padding),
                pooledSize(s[3], kernel: kernelSize, stride: stride, padding: padding)]
    }

    public func forward(_ x: Tensor) -> Tensor {
        let profileStart = WorkProfile.start()
        defer { WorkProfile.stop(.pooling, since: profileStart) }
        let y = outputs.get(outputShape(for: x.shape))
        if argmaxCount < y.count {
            argmax?.deallocate()
            argmax = .allocate(capacity: y.count)
            argmaxCount = y.count
        }
        inputShape = x.shape
        inputBlock = x.channelBlock
        if x.channelBlock != 0 {
            precondition(acceptsBlocked, "MaxPool2d: channel-blocked input needs 2x2 windows of stride 2")
            maxPool2x2Blocked(x: x, y: y, argmax: argmax!)
            return edge.output(y, mayEmitBlocked: mayEmitBlocked)
        }
        maxPoolForward(x: x, kernel: kernelSize, stride: stride, padding: padding, y: y, argmax: argmax!)
        y.channelBlock = 0
        return edge.output(y, mayEmitBlocked: mayEmitBlocked)
    }

    public func backward(_ gradOutput: Tensor) -> Tensor {
        let profileStart = WorkProfile.start()
        defer { WorkProfile.stop(.pooling, since: profileStart) }
        guard let am = argmax else { preconditionFailure("MaxPool2d.backward before forward") }
        let gradOutput = edge.gradient(gradOutput)
        let dx = gradInputs.get(inputShape)
        if inputBlock != 0 {
            maxPoolBackwardBlocked(gradOutput: gradOutput, argmax: am, gradInput: dx, block: inputBlock)
        } else {
            maxPoolBackward(gradOutput: gradOutput, argmax: am, gradInput: dx)
            dx.channelBlock = 0
        }
        return dx
    }
}

/// Average pooling (`torch.nn.AvgPool2d`, padding counted in the divisor):
/// [N, C, H, W] → [N, C, H', W'], H' as for `MaxPool2d`.
public final class AvgPool2d: Layer {
    public let kernelSize: Int, stride: Int, padding: Int
    public var isTraining = true
    public var needsInputGradient = true
    private var outputs = BufferCache()
    private var gradInputs = BufferCache()
    private var inputShape: [Int] = []

    public init(kernelSize: Int, stride: Int? = nil, padding: Int = 0) {
        self.kernelSize = kernelSize
        self.stride = stride ?? kernelSize
        self.padding = padding
    }

    public func outputShape(for s: [Int]) -> [Int] {
        precondition(s.count == 4, "AvgPool2d: input \(s), expected [N, C, H, W]")
        return [s[0], s[1], pooledSize(s[2], kernel: kernelSize, stride: stride, padding: padding),
                pooledSize(s[3], kernel: kernelSize, stride: stride, padding: padding)]
    }

    public func forward(_ x: Tensor) -> Tensor {
        let profileStart = WorkProfile.start()
        defer { WorkProfile.stop(.pooling, since: profileStart) }
        let y = outputs.get(outputShape(for: x.shape))
        inputShape = x.shape
        avgPoolForward(x: x, kernel: kernelSize, stride: stride, padding: padding, y: y)
        return y
    }

    public func backward(_ gradOutput: Tensor) -> Tensor {
        let profileStart = WorkProfile.start()
        defer { WorkProfile.stop(.pooling, since: profileStart) }
        let dx = gradInputs.get(inputShape)
        avgPoolBackward(gradOutput: gradOutput, kernel: kernelSize, stride: stride, padding: padding, gradInput: dx)
        return dx
    }
}

/// Global average pooling to [N, C] (`AdaptiveAvgPool2d(1)` followed by `flatten`), of NCHW
/// or channel-blocked activations.
public final class GlobalAvgPool: BlockedLayoutLayer {
    public var isTraining = true
    public var needsInputGradient = true
    package var acceptsBlocked: Bool { true }
    /// The output, [N, C], has no layout to choose.
    package var mayEmitBlocked = false
    private var inputBlock = 0
    private var outputs = BufferCache()
    private var gradInputs = BufferCache()
    private var inputShape: [Int] = []

    public init() {}
    public func outputShape(for s: [Int]) -> [Int] { [s[0], s[1]] }

    public func forward(_ x: Tensor) -> Tensor {
        let profileStart = WorkProfile.start()
        defer { WorkProfile.stop(.pooling, since: profileStart) }
        precondition(x.rank == 4, "GlobalAvgPool: input \(x.shape), expected [N, C, H, W]")
        let y = outputs.get(outputShape(for: x.shape))
        inputShape = x.shape
        inputBlock = x.channelBlock
        if x.channelBlock != 0 {
            globalAvgPoolForwardBlocked(x: x, y: y)
        } else {
            globalAvgPoolForward(x: x, y: y)
        }
        return y
    }

    public func backward(_ gradOutput: Tensor) -> Tensor {
        let profileStart = WorkProfile.start()
        defer { WorkProfile.stop(.pooling, since: profileStart) }
        let dx = gradInputs.get(inputShape)
        if inputBlock != 0 {
            globalAvgPoolBackwardBlocked(gradOutput: gradOutput, gradInput: dx, block: inputBlock)
        } else {
            globalAvgPoolBackward(gradOutput: gradOutput, gradInput: dx)
            dx.channelBlock = 0
        }
        return dx
    }
}
