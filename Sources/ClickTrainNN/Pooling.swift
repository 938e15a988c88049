import ClickTrainCore

/// Max pooling (`torch.nn.MaxPool2d`, floor mode).
public final class MaxPool2d: Layer {
    public let kernelSize: Int, stride: Int, padding: Int
    public var isTraining = true
    public var needsInputGradient = true
    private var output: Tensor?
    private var gradInput: Tensor?
    private var argmax: UnsafeMutablePointer<Int32>?
    private var argmaxCount = 0

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
        let y = reuse(output, shape: outputShape(for: x.shape))
        output = y
        if argmaxCount < y.count {
            argmax?.deallocate()
            argmax = .allocate(capacity: y.count)
            argmaxCount = y.count
        }
        if gradInput?.shape != x.shape { gradInput = Tensor(shape: x.shape) }
        maxPoolForward(x: x, kernel: kernelSize, stride: stride, padding: padding, y: y, argmax: argmax!)
        return y
    }

    public func backward(_ gradOutput: Tensor) -> Tensor {
        guard let dx = gradInput, let am = argmax else { preconditionFailure("MaxPool2d.backward before forward") }
        maxPoolBackward(gradOutput: gradOutput, argmax: am, gradInput: dx)
        return dx
    }
}

/// Average pooling (`torch.nn.AvgPool2d`, padding counted in the divisor).
public final class AvgPool2d: Layer {
    public let kernelSize: Int, stride: Int, padding: Int
    public var isTraining = true
    public var needsInputGradient = true
    private var output: Tensor?
    private var gradInput: Tensor?
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
        let y = reuse(output, shape: outputShape(for: x.shape))
        output = y
        inputShape = x.shape
        avgPoolForward(x: x, kernel: kernelSize, stride: stride, padding: padding, y: y)
        return y
    }

    public func backward(_ gradOutput: Tensor) -> Tensor {
        let dx = reuse(gradInput, shape: inputShape)
        gradInput = dx
        avgPoolBackward(gradOutput: gradOutput, kernel: kernelSize, stride: stride, padding: padding, gradInput: dx)
        return dx
    }
}

/// Global average pooling to [N, C] (`AdaptiveAvgPool2d(1)` followed by `flatten`).
public final class GlobalAvgPool: Layer {
    public var isTraining = true
    public var needsInputGradient = true
    private var output: Tensor?
    private var gradInput: Tensor?
    private var inputShape: [Int] = []

    public init() {}
    public func outputShape(for s: [Int]) -> [Int] { [s[0], s[1]] }

    public func forward(_ x: Tensor) -> Tensor {
        precondition(x.rank == 4, "GlobalAvgPool: input \(x.shape), expected [N, C, H, W]")
        let y = reuse(output, shape: outputShape(for: x.shape))
        output = y
        inputShape = x.shape
        globalAvgPoolForward(x: x, y: y)
        return y
    }

    public func backward(_ gradOutput: Tensor) -> Tensor {
        let dx = reuse(gradInput, shape: inputShape)
        gradInput = dx
        globalAvgPoolBackward(gradOutput: gradOutput, gradInput: dx)
        return dx
    }
}
