import ClickTrainCore

/// Fully connected layer `y = x·Wᵀ + b`: x [N, in], W [out, in], b [out], y [N, out]
/// (`torch.nn.Linear`, same default init:
/// uniform in ±1/sqrt(in) for weight and bias).
public final class Linear: Layer {
    public let inFeatures: Int, outFeatures: Int
    public let weight: Parameter
    public let bias: Parameter?
    public var isTraining = true
    public var needsInputGradient = true
    /// Activation-gradient pruning of the incoming gradient, with this layer's name.
    public var gradientPruning: (policy: GradientPruningPolicy, name: String)?
    private var prunedGrads = BufferCache()
    private var input: Tensor?
    /// Shape of the last input (model accounting reads it after a forward pass).
    public var lastInputShape: [Int]? { input?.shape }
    private var outputs = BufferCache()
    private var gradInputs = BufferCache()

    public init(_ inFeatures: Int, _ outFeatures: Int, bias: Bool = true, rng: inout RNG) {
        precondition(inFeatures > 0 && outFeatures > 0, "Linear: invalid sizes \(inFeatures)->\(outFeatures)")
        self.inFeatures = inFeatures
        self.outFeatures = outFeatures
        let bound = 1 / Float(inFeatures).squareRoot()
        let w = Tensor(shape: [outFeatures, inFeatures])
        for i in 0..<w.count { w[i] = (rng.uniform() * 2 - 1) * bound }
        weight = Parameter(w)
        if bias {
            let b = Tensor(shape: [outFeatures])
            for i in 0..<outFeatures { b[i] = (rng.uniform() * 2 - 1) * bound }
            self.bias = Parameter(b, isBiasOrNorm: true)
        } else {
            self.bias = nil
        }
    }

    public var localState: [(String, StateEntry)] {
        var s: [(String, StateEntry)] = [("weight", .parameter(weight))]
        if let b = bias { s.append(("bias", .parameter(b))) }
        return s
    }

    public func outputShape(for input: [Int]) -> [Int] {
        precondition(input.count == 2 && input[1] == inFeatures,
                     "Linear(\(inFeatures)->\(outFeatures)): input \(input), expected [N, \(inFeatures)]")
        return [input[0], outFeatures]
    }

    public func forward(_ x: Tensor) -> Tensor {
        let profileStart = WorkProfile.start()
        defer { WorkProfile.stop(.linear, since: profileStart) }
        let y = outputs.get(outputShape(for: x.shape))
        input = x
        linearForward(x: x, weight: weight.value, bias: bias?.value, y: y)
        return y
    }

    public func backward(_ gradOutput: Tensor) -> Tensor {
        let profileStart = WorkProfile.start()
        defer { WorkProfile.stop(.linear, since: profileStart) }
        guard let x = input else { preconditionFailure("Linear.backward before forward") }
        var dx: Tensor? = nil
        if needsInputGradient {
            dx = gradInputs.get(x.shape)
        }
        var dy = gradOutput
        if let (policy, name) = gradientPruning, policy.enabled {
            dy = prunedGrads.get(gradOutput.shape)
            policy.prune(gradOutput, into: dy, layer: name)
        }
        linearBackward(x: x, weight: weight.value, gradOutput: dy, gradInput: dx, gradWeight: weight.grad,
                       gradBias: bias?.grad)
        return dx ?? gradOutput
    }
}
