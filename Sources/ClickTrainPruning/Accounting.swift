import ClickTrainCore
import ClickTrainNN

/// FLOPs and compression from a model's actual masks. A multiply-add counts
/// as 2 FLOPs; conv and linear layers are counted (BN, ReLU and pooling are <1% here and
/// left out, for dense and pruned alike).
public struct ModelCost: Sendable, Codable {
    /// One conv or linear layer's weights, non-zero weights and FLOPs per image.
    public struct Layer: Sendable, Codable {
        public var name: String
        public var kind: String
        public var weightShape: [Int]
        public var weights: Int
        public var nonZeroWeights: Int
        public var denseForwardFLOPs: Double
        public var forwardFLOPs: Double
        /// Whether the layer computes an input gradient (not the first layer).
        public var hasInputGradient: Bool
    }

    public var layers: [Layer]

    /// Per-image inference FLOPs at the masks' sparsity, and dense.
    public var inferenceFLOPs: Double { layers.reduce(0) { $0 + $1.forwardFLOPs } }
    public var denseInferenceFLOPs: Double { layers.reduce(0) { $0 + $1.denseForwardFLOPs } }

    /// Per-image training FLOPs: forward + weight gradient + input gradient, each at the
    /// weights' sparsity (`sparse`) or dense.
    public func trainingFLOPs(sparse: Bool) -> Double {
        layers.reduce(0) { acc, l in
            let f = sparse ? l.forwardFLOPs : l.denseForwardFLOPs
            return acc + f * (l.hasInputGradient ? 3 : 2)
        }
    }

    public var convWeights: Int { layers.filter { $0.kind == "conv" }.reduce(0) { $0 + $1.weights } }
    public var convNonZero: Int { layers.filter { $0.kind == "conv" }.reduce(0) { $0 + $1.nonZeroWeights } }
    /// Dense conv weights over remaining non-zero conv weights.
    public var convCompressionRatio: Double { Double(convWeights) / Double(max(convNonZero, 1)) }

    /// Measures a model by running one image through it (evaluation mode) to learn every
    /// layer's shapes, counting non-zero weights as they are now.
    public static func measure(_ model: any ClickTrainNN.Layer, input: ModelInput) -> ModelCost {
        let was = model.isTraining
        model.train(false)
        defer { model.train(was) }
        var shapes: [ObjectIdentifier: [Int]] = [:]
        // Shape propagation through Sequential trees: record each conv/linear input shape.
        func walk(_ l: any ClickTrainNN.Layer, _ shape: [Int]) -> [Int] {
            if let s = l as? Sequential {
                return s.layers.reduce(shape) { walk($1.1, $0) }
            }
            if let b = l as? BasicBlock {
                let mid = walk(b.conv1, shape)
                let out = walk(b.conv2, mid)
                if let sc = b.shortcut { _ = walk(sc, shape) }
                return out
            }
            if let b = l as? Bottleneck {
                let out = walk(b.conv3, walk(b.conv2, walk(b.conv1, shape)))
                if let d = b.downsample { _ = walk(d, shape) }
                return out
            }
            if l is Conv2d || l is Linear { shapes[ObjectIdentifier(l)] = shape }
            return l.outputShape(for: shape)
        }
        _ = walk(model, [1, input.channels, input.size, input.size])
        // A layer of the caller's own hides its convs from the walk: one image through the
        // model (evaluation mode: no statistics change) tells their shapes.
        let weighted = model.namedModules().filter { $0.1 is Conv2d || $0.1 is Linear }
        if weighted.contains(where: { shapes[ObjectIdentifier($0.1)] == nil }) {
            _ = model.forward(Tensor(shape: [1, input.channels, input.size, input.size]))
            for (_, l) in weighted {
                shapes[ObjectIdentifier(l)] = (l as? Conv2d)?.lastInputShape ?? (l as? Linear)?.lastInputShape
            }
        }
        var out: [Layer] = []
        var first = true
        for (name, l) in model.namedModules() {
            guard let shape = shapes[ObjectIdentifier(l)] else { continue }
            let w: Parameter, macsPerWeight: Double, kind: String
            if let c = l as? Conv2d {
                let g = c.geometry(for: shape)
                w = c.weight
                macsPerWeight = Double(g.outHeight * g.outWidth)
                kind = "conv"
            } else if let f = l as? Linear {
                w = f.weight
                macsPerWeight = 1
                kind = "linear"
            } else { continue }
            let nz = (0..<w.value.count).reduce(0) { $0 + (w.value[$1] != 0 ? 1 : 0) }
            out.append(Layer(name: name, kind: kind, weightShape: w.shape, weights: w.value.count, nonZeroWeights: nz,
                             denseForwardFLOPs: 2 * macsPerWeight * Double(w.value.count),
                             forwardFLOPs: 2 * macsPerWeight * Double(nz), hasInputGradient: !first))
            first = false
        }
        return ModelCost(layers: out)
    }
}
