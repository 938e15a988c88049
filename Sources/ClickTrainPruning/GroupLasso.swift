import ClickTrainCore

/// ClickTrain's modified group lasso (stage 4 of the method): one group per kernel for its
/// off-pattern weights and one per removed kernel,
/// `λ · ( Σ_k sqrt(‖W_k ⊙ ¬P_k‖² + ε) + Σ_{k removed} sqrt(‖W_k‖² + ε) )`, ε = 1e-8.
public enum GroupLasso {
    public static let epsilon: Float = 1e-8

    /// The penalty's value for one layer.
    public static func penalty(weight w: UnsafePointer<Float>, layer: PrunedLayer, lambda: Float) -> Double {
        var total = 0.0
        for k in 0..<layer.kernels {
            let p = layer.pool[Int(layer.patternIDs[k])]
            var sq: Float = 0
            for i in 0..<9 where layer.removed[k] || !p.contains(i) { sq += w[k * 9 + i] * w[k * 9 + i] }
            total += Double((sq + epsilon).squareRoot())
        }
        return Double(lambda) * total
    }

    /// Adds the penalty's gradient, `λ · W_g / sqrt(‖W_g‖² + ε)` per group, to `grad`.
    public static func addGradient(weight w: UnsafePointer<Float>, grad g: UnsafeMutablePointer<Float>,
                                   layer: PrunedLayer, lambda: Float) {
        for k in 0..<layer.kernels {
            let p = layer.pool[Int(layer.patternIDs[k])]
            let all = layer.removed[k]
            var sq: Float = 0
            for i in 0..<9 where all || !p.contains(i) { sq += w[k * 9 + i] * w[k * 9 + i] }
            let scale = lambda / (sq + epsilon).squareRoot()
            for i in 0..<9 where all || !p.contains(i) { g[k * 9 + i] += scale * w[k * 9 + i] }
        }
    }
}
