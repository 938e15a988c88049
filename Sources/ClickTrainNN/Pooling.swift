import ClickTrainCore

/// Max pooling (`torch.nn.MaxPool2d`, floor mode): [N, C, H, W] → [N, C, H', W'] with
/// H' = (H + 2·padding − kernelSize) / stride + 1 (stride defaults to the kernel size).
public final class MaxPool2d: Layer {
    public let kernelSize: Int, stride: Int, padding: Int
    public var isTraining = true
    public var needsInputGradient = true
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
        maxPoolForward(x: x, kernel: kernelSize, stride: stride, padding: padding, y: y, argmax: argmax!)
        return y
    }

    public func backward(_ gradOutput: Tensor) -> Tensor {
        let profileStart = WorkProfile.start()
        defer { WorkProfile.stop(.pooling, since: profileStart) }
        guard let am = argmax else { preconditionFailure("MaxPool2d.backward before forward") }
        let dx = gradInputs.get(inputShape)
        maxPoolBackward(gradOutput: gradOutput, argmax: am, gradInput: dx)
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

/// Global average pooling to [N, C] (`AdaptiveAvgPool2d(1)` followed by `flatten`).
public final class GlobalAvgPool: Layer {
    public var isTraining = true
    public var needsInputGradient = true
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
        globalAvgPoolForward(x: x, y: y)
        return y
    }

    public func backward(_ gradOutput: Tensor) -> Tensor {
        let profileStart = WorkProfile.start()
        defer { WorkProfile.stop(.pooling, since: profileStart) }
        let dx = gradInputs.get(inputShape)
        globalAvgPoolBackward(gradOutput: gradOutput, gradInput: dx)
        return dx
    }
}
