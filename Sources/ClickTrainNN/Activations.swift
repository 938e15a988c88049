import ClickTrainCore

/// `max(x, 0)` element-wise, any shape to the same shape (`torch.nn.ReLU`), in the layout
/// it is given.
public final class ReLU: BlockedLayoutLayer {
    public var isTraining = true
    public var needsInputGradient = true
    package var acceptsBlocked: Bool { true }
    package var mayEmitBlocked = false
    private var outputs = BufferCache()
    private var gradInputs = BufferCache()
    private var edge = OutputEdge()

    public init() {}
    public func outputShape(for input: [Int]) -> [Int] { input }

    public func forward(_ x: Tensor) -> Tensor {
        let profileStart = WorkProfile.start()
        defer { WorkProfile.stop(.elementwise, since: profileStart) }
        let y = outputs.get(x.shape)
        reluForward(x: x, y: y)
        y.channelBlock = x.channelBlock
        return edge.output(y, mayEmitBlocked: mayEmitBlocked)
    }

    public func backward(_ gradOutput: Tensor) -> Tensor {
        let profileStart = WorkProfile.start()
        defer { WorkProfile.stop(.elementwise, since: profileStart) }
        guard let y = outputs.last else { preconditionFailure("ReLU.backward before forward") }
        let dx = gradInputs.get(y.shape)
        reluBackward(y: y, gradOutput: edge.gradient(gradOutput), gradInput: dx)
        dx.channelBlock = y.channelBlock
        return dx
    }
}

/// [N, C, H, W] → [N, C·H·W] without copying (`torch.nn.Flatten`).
public final class Flatten: Layer {
    public var isTraining = true
    public var needsInputGradient = true
    private var inputShape: [Int] = []

    public init() {}
    public func outputShape(for input: [Int]) -> [Int] { [input[0], input.dropFirst().reduce(1, *)] }

    public func forward(_ x: Tensor) -> Tensor {
        inputShape = x.shape
        return x.reshaped(outputShape(for: x.shape))
    }

    public func backward(_ gradOutput: Tensor) -> Tensor { gradOutput.reshaped(inputShape) }
}
