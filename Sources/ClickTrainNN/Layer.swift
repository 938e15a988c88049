import ClickTrainCore

/// A network building block with an explicit forward and backward pass.
///
/// `forward` returns a tensor the layer owns (valid until it runs again) and keeps
/// what `backward` needs. `backward` takes dL/d(output), writes the gradients of its
/// parameters (overwriting them) and returns dL/d(input), also layer-owned.
public protocol Layer: AnyObject {
    func forward(_ x: Tensor) -> Tensor
    func backward(_ gradOutput: Tensor) -> Tensor
    /// Output shape for an input shape (no computation), for building models.
    func outputShape(for input: [Int]) -> [Int]
    /// This layer's own state (not its children's), with local names (`weight`, `running_mean`).
    var localState: [(String, StateEntry)] { get }
    /// Named sub-layers, in the order PyTorch registers them.
    var children: [(String, any Layer)] { get }
    /// Training (batch statistics) or evaluation mode.
    var isTraining: Bool { get set }
    /// When false the layer may skip computing the input gradient (first layer).
    var needsInputGradient: Bool { get set }
}

extension Layer {
    public var localState: [(String, StateEntry)] { [] }
    public var children: [(String, any Layer)] { [] }
    public func callAsFunction(_ x: Tensor) -> Tensor { forward(x) }

    /// Every state entry of this layer and its descendants with its full dotted name.
    public func stateDict(prefix: String = "") -> [(String, StateEntry)] {
        var out: [(String, StateEntry)] = localState.map { (prefix + $0.0, $0.1) }
        for (name, child) in children { out += child.stateDict(prefix: prefix + name + ".") }
        return out
    }

    /// Trainable parameters in `state_dict` order.
    public func parameters() -> [Parameter] {
        stateDict().compactMap { if case .parameter(let p) = $0.1 { return p } else { return nil } }
    }

    /// Writes each parameter's full name into `Parameter.name`.
    public func assignNames() {
        for (name, entry) in stateDict() { if case .parameter(let p) = entry { p.name = name } }
    }

    /// Sets training or evaluation mode on the whole tree.
    public func train(_ on: Bool = true) {
        isTraining = on
        for (_, c) in children { c.train(on) }
    }

    /// Every layer in the tree (depth-first, self first), with its dotted name.
    public func namedModules(prefix: String = "") -> [(String, any Layer)] {
        var out: [(String, any Layer)] = [(prefix, self)]
        for (name, c) in children {
            out += c.namedModules(prefix: prefix.isEmpty ? name : prefix + "." + name)
        }
        return out
    }
}

/// A layer that takes channel-blocked activations (see `ChannelBlocking`) as well as NCHW,
/// and may give blocked output. Its container sets `mayEmitBlocked` when the layer after
/// it takes blocked input too; everywhere else activations are NCHW, so a layer a user
/// writes, or a layer called on its own, sees NCHW only. Gradients travel in the layout of
/// the activations they belong to.
package protocol BlockedLayoutLayer: Layer {
    /// Whether the layer takes blocked input (else its container converts to NCHW first).
    var acceptsBlocked: Bool { get }
    /// Whether the output may be blocked: the consumer takes it. False unless set.
    var mayEmitBlocked: Bool { get set }
}

extension Layer {
    /// Whether this layer takes channel-blocked input.
    var acceptsBlocked: Bool { (self as? any BlockedLayoutLayer)?.acceptsBlocked ?? false }
    /// Sets `mayEmitBlocked` where the layer has it.
    func setMayEmitBlocked(_ on: Bool) {
        if let l = self as? any BlockedLayoutLayer { l.mayEmitBlocked = on }
    }
}

/// The output edge of a layer that computes in its input's layout: a blocked result goes
/// out as NCHW when the consumer does not take blocked input, and the gradient that comes
/// back is converted to the layout the layer computed in.
package struct OutputEdge {
    private var forwardConversion = LayoutConverter(), backwardConversion = LayoutConverter()
    /// The layout the layer computed its output in.
    package private(set) var computedBlock = 0

    package init() {}

    package mutating func output(_ y: Tensor, mayEmitBlocked: Bool) -> Tensor {
        computedBlock = y.channelBlock
        return y.channelBlock == 0 || mayEmitBlocked ? y : forwardConversion.plain(y)
    }

    package mutating func gradient(_ g: Tensor) -> Tensor { backwardConversion.converted(g, to: computedBlock) }
}

/// Layers in a row, each with the name PyTorch would give it (`"0"`, `"conv1"`, …).
public final class Sequential: BlockedLayoutLayer {
    public let layers: [(String, any Layer)]
    public var isTraining = true
    public var needsInputGradient = true {
        didSet { layers.first?.1.needsInputGradient = needsInputGradient }
    }
    package var acceptsBlocked: Bool { layers.first?.1.acceptsBlocked ?? false }
    package var mayEmitBlocked = false {
        didSet { layers.last?.1.setMayEmitBlocked(mayEmitBlocked) }
    }
    /// Per layer, whether the last forward skipped it: a ReLU applied by the batch norm before it.
    private var fusedIntoPrevious: [Bool]

    /// Each layer may hand blocked activations to the next when that one takes them, the
    /// last one when this container's consumer does (`mayEmitBlocked`); the layers convert
    /// their own output otherwise, so no conversion happens here.
    public init(_ layers: [(String, any Layer)]) {
        self.layers = layers
        fusedIntoPrevious = Array(repeating: false, count: layers.count)
        linkLayouts()
    }

    /// Which layer may hand blocked output to the next: whether a layer takes it can
    /// change during training (a conv moves to the pattern kernels at hard pruning), so
    /// every forward asks again.
    private func linkLayouts() {
        for i in layers.indices.dropLast() { layers[i].1.setMayEmitBlocked(layers[i + 1].1.acceptsBlocked) }
    }
    /// Layers named "0", "1", … as in `nn.Sequential(a, b, …)`.
    public convenience init(indexed: [any Layer]) {
        self.init(indexed.enumerated().map { (String($0.offset), $0.element) })
    }

    public var children: [(String, any Layer)] { layers }
    /// Called after each layer's backward, with that layer: its parameters' gradients are
    /// final from then on (data parallelism starts exchanging them while backward goes on).
    package var childBackwardDone: ((any Layer) -> Void)?

    /// At inference a chain of residual blocks (a ResNet stage) writes its pruned convs'
    /// results into two alternating block outputs and one shared inner buffer: block i
    /// reads block i-1's output (input and residual) and overwrites block i-2's, which is
    /// dead. Each layer's own buffer would make every layer stream its activations
    /// through memory (batch 128: 8 MB per activation, 30 layers > the 32 MB L3).
    private var chainBuffers = BufferCache(), innerBuffers = BufferCache()
    private var chainSecond = BufferCache()

    public func forward(_ x: Tensor) -> Tensor {
        linkLayouts()
        if !isTraining, !layers.isEmpty, layers.allSatisfy({ $0.1 is BasicBlock }) {
            var h = x
            for (i, (_, l)) in layers.enumerated() {
                let block = l as! BasicBlock
                let outShape = block.outputShape(for: h.shape)
                let out = i % 2 == 0 ? chainBuffers.get(outShape) : chainSecond.get(outShape)
                h = block.forward(h, output: out, inner: innerBuffers.get(block.conv1.outputShape(for: h.shape)))
            }
            return h
        }
        var h = x
        var i = 0
        for j in fusedIntoPrevious.indices { fusedIntoPrevious[j] = false }
        while i < layers.count {
            precondition(h.channelBlock == 0 || layers[i].1.acceptsBlocked, "Sequential: blocked input to layer \(layers[i].0)")
            // At inference a pruned conv followed by batch norm (and ReLU) runs as one pass.
            if let conv = layers[i].1 as? Conv2d, i + 1 < layers.count, let bn = layers[i + 1].1 as? BatchNorm2d {
                let relu = i + 2 < layers.count && layers[i + 2].1 is ReLU
                let last = layers[i + (relu ? 2 : 1)].1
                if let y = conv.forwardFolding(h, bn, relu: relu,
                                               emitBlocked: (last as? any BlockedLayoutLayer)?.mayEmitBlocked ?? false) {
                    h = y
                    i += relu ? 3 : 2
                    continue
                }
            }
            // Batch norm followed by ReLU runs as one pass.
            if let bn = layers[i].1 as? BatchNorm2d, i + 1 < layers.count, let relu = layers[i + 1].1 as? ReLU {
                h = bn.forward(h, then: relu)
                fusedIntoPrevious[i + 1] = true
                i += 2
                continue
            }
            h = layers[i].1.forward(h)
            i += 1
        }
        return h
    }

    public func backward(_ gradOutput: Tensor) -> Tensor {
        var g = gradOutput
        for (i, (_, l)) in layers.enumerated().reversed() {
            if !fusedIntoPrevious[i] { g = l.backward(g) }
            childBackwardDone?(l)
        }
        return g
    }

    public func outputShape(for input: [Int]) -> [Int] {
        layers.reduce(input) { $1.1.outputShape(for: $0) }
    }
}
