import ClickTrainCore

/// A residual connection around any layers: `body(x) + shortcut(x)` (the identity when
/// `shortcut` is nil), then ReLU when `reluAfter`. `body` and `shortcut` map the same
/// [N, C, H, W] input to outputs of one shape. Pruning methods see the convs inside
/// `body` and `shortcut` like any others (children `body` and `shortcut`).
public final class Residual: Layer {
    public let body: any Layer
    public let shortcut: (any Layer)?
    public let reluAfter: Bool
    public var isTraining = true
    public var needsInputGradient = true {
        didSet {
            body.needsInputGradient = needsInputGradient
            shortcut?.needsInputGradient = needsInputGradient
        }
    }
    private var outputs = BufferCache(), gradOutputs = BufferCache(), gradInputs = BufferCache()
    private var inputShape: [Int]?

    public init(body: any Layer, shortcut: (any Layer)? = nil, reluAfter: Bool = true) {
        self.body = body
        self.shortcut = shortcut
        self.reluAfter = reluAfter
    }

    public var children: [(String, any Layer)] {
        [("body", body)] + (shortcut.map { [("shortcut", $0)] } ?? [])
    }

    /// The body's output shape; the shortcut (or the input itself) must have the same.
    public func outputShape(for input: [Int]) -> [Int] {
        let out = body.outputShape(for: input)
        let other = shortcut?.outputShape(for: input) ?? input
        precondition(out == other, "Residual: the body gives \(out) and the shortcut \(other) for input \(input)")
        return out
    }

    public func forward(_ x: Tensor) -> Tensor {
        let b = body.forward(x)
        let s = shortcut?.forward(x) ?? x
        precondition(b.shape == s.shape, "Residual: the body gives \(b.shape) and the shortcut \(s.shape)")
        inputShape = x.shape
        let profileStart = WorkProfile.start()
        defer { WorkProfile.stop(.elementwise, since: profileStart) }
        let y = outputs.get(b.shape)
        if reluAfter { addReluForward(b, s, y: y) } else { add(b, s, into: y) }
        return y
    }

    public func backward(_ gradOutput: Tensor) -> Tensor {
        guard let y = outputs.last, let inputShape else { preconditionFailure("Residual.backward before forward") }
        var g = gradOutput
        if reluAfter {
            let profileStart = WorkProfile.start()
            g = gradOutputs.get(y.shape)
            reluBackward(y: y, gradOutput: gradOutput, gradInput: g)
            WorkProfile.stop(.elementwise, since: profileStart)
        }
        let fromBody = body.backward(g)
        let fromShortcut = shortcut?.backward(g) ?? g
        guard needsInputGradient else { return fromBody }
        let profileStart = WorkProfile.start()
        defer { WorkProfile.stop(.elementwise, since: profileStart) }
        let dx = gradInputs.get(inputShape)
        add(fromBody, fromShortcut, into: dx)
        return dx
    }
}

/// Branches side by side over one input, their [N, C_i, H, W] outputs concatenated along
/// the channels into [N, ΣC_i, H, W] (`torch.cat(dim=1)`). Children are named "0", "1", ….
public final class Concat: Layer {
    public let branches: [any Layer]
    public var isTraining = true
    public var needsInputGradient = true {
        didSet { for b in branches { b.needsInputGradient = needsInputGradient } }
    }
    private var outputs = BufferCache(), gradInputs = BufferCache()
    private var branchGrads: [BufferCache]
    private var branchShapes: [[Int]] = []
    private var inputShape: [Int]?

    public init(_ branches: [any Layer]) {
        precondition(!branches.isEmpty, "Concat needs at least one branch")
        self.branches = branches
        branchGrads = Array(repeating: BufferCache(), count: branches.count)
    }

    public var children: [(String, any Layer)] { branches.enumerated().map { (String($0.offset), $0.element) } }

    public func outputShape(for input: [Int]) -> [Int] {
        let shapes = branches.map { $0.outputShape(for: input) }
        return Concat.joined(shapes)
    }

    static func joined(_ shapes: [[Int]]) -> [Int] {
        let first = shapes[0]
        precondition(shapes.allSatisfy { $0.count == 4 && $0[0] == first[0] && $0[2...] == first[2...] },
                     "Concat: branch outputs \(shapes) differ in batch or spatial size")
        return [first[0], shapes.reduce(0) { $0 + $1[1] }, first[2], first[3]]
    }

    public func forward(_ x: Tensor) -> Tensor {
        let outs = branches.map { $0.forward(x) }
        branchShapes = outs.map(\.shape)
        inputShape = x.shape
        let profileStart = WorkProfile.start()
        defer { WorkProfile.stop(.elementwise, since: profileStart) }
        let y = outputs.get(Concat.joined(branchShapes))
        let n = y.shape[0], perOut = y.count / max(n, 1)
        var offset = 0
        for o in outs {
            let per = o.count / max(n, 1)
            for i in 0..<n { (y.data + i * perOut + offset).update(from: o.data + i * per, count: per) }
            offset += per
        }
        return y
    }

    public func backward(_ gradOutput: Tensor) -> Tensor {
        guard let inputShape else { preconditionFailure("Concat.backward before forward") }
        let n = gradOutput.shape[0], perOut = gradOutput.count / max(n, 1)
        var offset = 0
        var dx: Tensor?
        for (b, shape) in branchShapes.enumerated() {
            let profileStart = WorkProfile.start()
            let g = branchGrads[b].get(shape)
            let per = g.count / max(n, 1)
            for i in 0..<n { (g.data + i * per).update(from: gradOutput.data + i * perOut + offset, count: per) }
            offset += per
            WorkProfile.stop(.elementwise, since: profileStart)
            let d = branches[b].backward(g)
            guard needsInputGradient else { continue }
            if let acc = dx {
                add(acc, d, into: acc)
            } else {
                let acc = gradInputs.get(inputShape)
                acc.copy(from: d)
                dx = acc
            }
        }
        return dx ?? gradOutput
    }
}
