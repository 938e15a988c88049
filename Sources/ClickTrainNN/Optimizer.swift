import ClickTrainCore

/// SGD with momentum, optional Nesterov and weight decay, with PyTorch's update rule:
/// `g += wd·w; buf = μ·buf + g; w -= lr·(nesterov ? g + μ·buf : buf)`.
/// Masked parameters are re-masked after every step, so pruned weights stay zero.
public final class SGD {
    public let parameters: [Parameter]
    public var learningRate: Float
    public var momentum: Float
    public var nesterov: Bool
    public var weightDecay: Float
    /// When false, BN weights/biases and all biases get no weight decay.
    public var decayBiasAndNorm: Bool
    /// Momentum buffers, one per parameter (saved in checkpoints).
    public let momentumBuffers: [Tensor]

    public init(parameters: [Parameter], learningRate: Float, momentum: Float = 0.9, nesterov: Bool = false,
                weightDecay: Float = 5e-4, decayBiasAndNorm: Bool = true) {
        self.parameters = parameters
        self.learningRate = learningRate
        self.momentum = momentum
        self.nesterov = nesterov
        self.weightDecay = weightDecay
        self.decayBiasAndNorm = decayBiasAndNorm
        momentumBuffers = parameters.map { Tensor(shape: $0.shape) }
    }

    public func step() {
        let lr = learningRate, mu = momentum, nest = nesterov
        for (p, buf) in zip(parameters, momentumBuffers) {
            let wd = (p.isBiasOrNorm && !decayBiasAndNorm) ? 0 : weightDecay
            let w = p.value.data, g = p.grad.data, b = buf.data
            let n = p.value.count
            for i in 0..<n {
                let gi = g[i] + wd * w[i]
                let bi = mu * b[i] + gi
                b[i] = bi
                w[i] -= lr * (nest ? gi + mu * bi : bi)
            }
            if let m = p.mask {
                let mp = m.data
                for i in 0..<n { w[i] *= mp[i]; b[i] *= mp[i] }
            }
        }
    }
}
