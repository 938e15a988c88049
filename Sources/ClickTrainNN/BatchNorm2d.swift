import ClickTrainCore

/// Batch normalisation over the channels of [N, C, H, W] → [N, C, H, W]; weight, bias and
/// running statistics [C] (`torch.nn.BatchNorm2d`:
/// momentum 0.1, eps 1e-5, running statistics and `num_batches_tracked`). Works on NCHW or
/// channel-blocked activations, in the layout it is given.
public final class BatchNorm2d: BlockedLayoutLayer {
    public let channels: Int
    public let momentum: Float, eps: Float
    public let weight: Parameter, bias: Parameter
    public let runningMean: Tensor, runningVar: Tensor
    public let numBatchesTracked = Counter()
    public var isTraining = true
    public var needsInputGradient = true
    /// When set, training uses the statistics of the batch of all the group's ranks
    /// together (synchronised batch norm), not this process's shard alone.
    package var group: (any ProcessGroup)?

    private let savedMean: Tensor, savedInvStd: Tensor
    private var input: Tensor?
    private var outputs = BufferCache()
    private var gradInputs = BufferCache()
    package var acceptsBlocked: Bool { true }
    package var mayEmitBlocked = false
    private var edge = OutputEdge()
    /// Whether the last forward applied the following ReLU (see `forward(_:then:)`).
    private var fusedReLU = false

    public init(_ channels: Int, momentum: Float = 0.1, eps: Float = 1e-5) {
        self.channels = channels
        self.momentum = momentum
        self.eps = eps
        let w = Tensor(shape: [channels])
        w.fill(1)
        weight = Parameter(w, isBiasOrNorm: true)
        bias = Parameter(Tensor(shape: [channels]), isBiasOrNorm: true)
        runningMean = Tensor(shape: [channels])
        runningVar = Tensor(shape: [channels])
        runningVar.fill(1)
        savedMean = Tensor(shape: [channels])
        savedInvStd = Tensor(shape: [channels])
    }

    /// A copy keeping only the given channels (parameters and running statistics).
    public func keeping(channels keep: [Int]) -> BatchNorm2d {
        let b = BatchNorm2d(keep.count, momentum: momentum, eps: eps)
        b.weight.value.copy(from: weight.value.keeping(axis: 0, indices: keep))
        b.bias.value.copy(from: bias.value.keeping(axis: 0, indices: keep))
        b.runningMean.copy(from: runningMean.keeping(axis: 0, indices: keep))
        b.runningVar.copy(from: runningVar.keeping(axis: 0, indices: keep))
        b.numBatchesTracked.value = numBatchesTracked.value
        b.isTraining = isTraining
        b.group = group
        b.mayEmitBlocked = mayEmitBlocked
        return b
    }

    public var localState: [(String, StateEntry)] {
        [("weight", .parameter(weight)), ("bias", .parameter(bias)), ("running_mean", .buffer(runningMean)),
         ("running_var", .buffer(runningVar)), ("num_batches_tracked", .counter(numBatchesTracked))]
    }

    public func outputShape(for input: [Int]) -> [Int] {
        precondition(input.count >= 2 && input[1] == channels, "BatchNorm2d(\(channels)): input \(input)")
        return input
    }

    public func forward(_ x: Tensor) -> Tensor { run(x, relu: false, mayEmitBlocked: mayEmitBlocked) }

    /// `relu(self(x))` in one pass, in place of this layer's forward followed by `relu`'s
    /// (which the caller then skips, in backward too: `backward` takes the gradient of the
    /// ReLU's output). The output's layout follows `relu.mayEmitBlocked`.
    package func forward(_ x: Tensor, then relu: ReLU) -> Tensor { run(x, relu: true, mayEmitBlocked: relu.mayEmitBlocked) }

    private func run(_ x: Tensor, relu: Bool, mayEmitBlocked: Bool) -> Tensor {
        let profileStart = WorkProfile.start()
        defer { WorkProfile.stop(.batchNorm, since: profileStart) }
        _ = outputShape(for: x.shape)
        let y = outputs.get(x.shape)
        input = x
        fusedReLU = relu
        if isTraining { numBatchesTracked.value += 1 }
        y.channelBlock = x.channelBlock
        if x.channelBlock != 0 {
            blockedBatchNormForward(x: x, gamma: weight.value, beta: bias.value, runningMean: runningMean,
                                    runningVar: runningVar, training: isTraining, momentum: momentum, eps: eps, y: y,
                                    savedMean: savedMean, savedInvStd: savedInvStd, group: isTraining ? group : nil,
                                    relu: relu)
        } else if isTraining, let group {
            batchNormForwardSynced(x: x, gamma: weight.value, beta: bias.value, runningMean: runningMean,
                                   runningVar: runningVar, momentum: momentum, eps: eps, y: y, savedMean: savedMean,
                                   savedInvStd: savedInvStd, group: group, relu: relu)
        } else {
            batchNormForward(x: x, gamma: weight.value, beta: bias.value, runningMean: runningMean,
                             runningVar: runningVar, training: isTraining, momentum: momentum, eps: eps, y: y,
                             savedMean: savedMean, savedInvStd: savedInvStd, relu: relu)
        }
        return edge.output(y, mayEmitBlocked: mayEmitBlocked)
    }

    public func backward(_ gradOutput: Tensor) -> Tensor {
        let profileStart = WorkProfile.start()
        defer { WorkProfile.stop(.batchNorm, since: profileStart) }
        guard let x = input, let y = outputs.last else { preconditionFailure("BatchNorm2d.backward before forward") }
        let gradOutput = edge.gradient(gradOutput)
        let dx = gradInputs.get(x.shape)
        dx.channelBlock = x.channelBlock
        let reluOutput = fusedReLU ? y : nil
        if !isTraining {
            if x.channelBlock != 0 {
                blockedBatchNormBackwardEval(gamma: weight.value, runningVar: runningVar, eps: eps,
                                             gradOutput: gradOutput, gradInput: dx, reluOutput: reluOutput)
            } else {
                batchNormBackwardEval(gamma: weight.value, runningVar: runningVar, eps: eps, gradOutput: gradOutput,
                                      gradInput: dx, reluOutput: reluOutput)
            }
            weight.grad.zero()
            bias.grad.zero()
        } else if x.channelBlock != 0 {
            blockedBatchNormBackward(x: x, gamma: weight.value, savedMean: savedMean, savedInvStd: savedInvStd,
                                     gradOutput: gradOutput, gradInput: dx, gradGamma: weight.grad,
                                     gradBeta: bias.grad, group: group, reluBeta: fusedReLU ? bias.value : nil)
        } else if let group {
            batchNormBackwardSynced(x: x, gamma: weight.value, savedMean: savedMean, savedInvStd: savedInvStd,
                                    gradOutput: gradOutput, gradInput: dx, gradGamma: weight.grad, gradBeta: bias.grad,
                                    group: group, reluOutput: reluOutput)
        } else {
            batchNormBackward(x: x, gamma: weight.value, savedMean: savedMean, savedInvStd: savedInvStd,
                              gradOutput: gradOutput, gradInput: dx, gradGamma: weight.grad, gradBeta: bias.grad,
                              reluOutput: reluOutput)
        }
        return dx
    }
}
