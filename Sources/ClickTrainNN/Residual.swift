import ClickTrainCore

/// The residual add at the end of a block, `relu(main + shortcut)`, and its backward. The
/// two inputs may come in different layouts (a pruned conv on NCHW next to a blocked
/// shortcut, or the reverse): the shortcut is converted to the main path's layout, and each
/// path's gradient goes back in its own layout.
final class ResidualJoin {
    private var outputs = BufferCache()
    private var gradSums = BufferCache()
    private var gradInputs = BufferCache()
    private var shortcutConversion = LayoutConverter()
    private var shortcutGradConversion = LayoutConverter()
    private var edge = OutputEdge()
    private var mainBlock = 0, shortcutBlock = 0

    func forward(_ main: Tensor, _ shortcut: Tensor, mayEmitBlocked: Bool) -> Tensor {
        let profileStart = WorkProfile.start()
        defer { WorkProfile.stop(.elementwise, since: profileStart) }
        mainBlock = main.channelBlock
        shortcutBlock = shortcut.channelBlock
        let b = shortcutConversion.converted(shortcut, to: mainBlock)
        let y = outputs.get(main.shape)
        addReluForward(main, b, y: y)
        y.channelBlock = mainBlock
        return edge.output(y, mayEmitBlocked: mayEmitBlocked)
    }

    /// dL/d(main + shortcut), in the layout of the sum, which is the main path's.
    func backward(_ dy: Tensor) -> Tensor {
        let profileStart = WorkProfile.start()
        defer { WorkProfile.stop(.elementwise, since: profileStart) }
        guard let y = outputs.last else { preconditionFailure("residual backward before forward") }
        let g = gradSums.get(y.shape)
        reluBackward(y: y, gradOutput: edge.gradient(dy), gradInput: g)
        g.channelBlock = y.channelBlock
        return g
    }

    /// The sum's gradient `g` in the shortcut's layout.
    func shortcutGradient(_ g: Tensor) -> Tensor { shortcutGradConversion.converted(g, to: shortcutBlock) }

    /// dL/dx = main-path gradient + shortcut-path gradient, in the main path's layout.
    func inputGradient(_ a: Tensor, _ b: Tensor) -> Tensor {
        let profileStart = WorkProfile.start()
        defer { WorkProfile.stop(.elementwise, since: profileStart) }
        precondition(a.channelBlock == b.channelBlock, "residual join: the two input gradients differ in layout")
        let dx = gradInputs.get(a.shape)
        add(a, b, into: dx)
        dx.channelBlock = a.channelBlock
        return dx
    }
}

/// The shortcut of a block: identity, or (He et al. option B) 1x1 conv + BN when the
/// shape changes, registered as `<name>.0` / `<name>.1`.
func projection(_ inC: Int, _ outC: Int, stride: Int, rng: inout RNG) -> Sequential? {
    if stride == 1 && inC == outC { return nil }
    return Sequential(indexed: [Conv2d(inC, outC, kernelSize: 1, stride: stride, rng: &rng), BatchNorm2d(outC)])
}

/// Two 3x3 convolutions with a residual connection (ResNet-18/34 and the CIFAR ResNets):
/// [N, C_in, H, W] → [N, C_out, H / stride, W / stride]. Inside the block, activations
/// between oneDNN convolutions stay channel-blocked.
public final class BasicBlock: BlockedLayoutLayer {
    public private(set) var conv1: Conv2d, bn1: BatchNorm2d
    public let relu: ReLU
    public private(set) var conv2: Conv2d
    public let bn2: BatchNorm2d
    public let shortcut: Sequential?
    public let shortcutName: String

    /// Channels between the two convolutions (free of the residual constraint).
    public var innerWidth: Int { conv1.outChannels }

    /// Keeps only the given inner channels: conv1's filters, bn1's channels and conv2's
    /// input channels (channel pruning that really makes the block smaller).
    public func shrinkInner(keeping keep: [Int]) {
        precondition(!keep.isEmpty, "shrinkInner: a block needs at least one inner channel")
        conv1 = conv1.keeping(outputChannels: keep)
        bn1 = bn1.keeping(channels: keep)
        conv2 = conv2.keeping(inputChannels: keep)
    }
    /// As conv1 does: the identity shortcut then joins a main path in the same layout.
    package var acceptsBlocked: Bool { conv1.acceptsBlocked }
    package var mayEmitBlocked = false
    public var isTraining = true
    public var needsInputGradient = true {
        didSet { conv1.needsInputGradient = needsInputGradient; shortcut?.needsInputGradient = needsInputGradient }
    }
    private let join = ResidualJoin()
    private var inferenceOutput = LayoutConverter()

    public init(_ inC: Int, _ outC: Int, stride: Int, shortcutName: String = "shortcut", rng: inout RNG) {
        conv1 = Conv2d(inC, outC, kernelSize: 3, stride: stride, padding: 1, rng: &rng)
        bn1 = BatchNorm2d(outC)
        relu = ReLU()
        conv2 = Conv2d(outC, outC, kernelSize: 3, padding: 1, rng: &rng)
        bn2 = BatchNorm2d(outC)
        shortcut = projection(inC, outC, stride: stride, rng: &rng)
        self.shortcutName = shortcutName
        // conv1's and the shortcut's are set on every forward (they follow conv2's kernels).
        for l in [bn1, relu, conv2, bn2] as [any BlockedLayoutLayer] { l.mayEmitBlocked = true }
    }

    public var children: [(String, any Layer)] {
        var c: [(String, any Layer)] = [("conv1", conv1), ("bn1", bn1), ("relu", relu), ("conv2", conv2), ("bn2", bn2)]
        if let s = shortcut { c.append((shortcutName, s)) }
        return c
    }

    public func outputShape(for input: [Int]) -> [Int] { conv2.outputShape(for: conv1.outputShape(for: input)) }

    public func forward(_ x: Tensor) -> Tensor { forward(x, output: nil, inner: nil) }

    /// `forward`, with the results of pruned convs at inference written to `output` (the
    /// block's output) and `inner` (between the convs) when given: buffers a chain of
    /// blocks shares, so that a stage's activations stay in the cache (see `Sequential`).
    func forward(_ x: Tensor, output: Tensor?, inner innerBuffer: Tensor?) -> Tensor {
        // Blocked between the convs and from the projection only where conv2 runs on
        // oneDNN (a pruned conv2 takes NCHW, and its output joins the shortcut as NCHW).
        conv1.mayEmitBlocked = conv2.acceptsBlocked
        shortcut?.mayEmitBlocked = conv2.acceptsBlocked
        // At inference pruned convs fold their batch norm (and ReLU) into one pass.
        let inner = conv1.forwardFolding(x, bn1, relu: true, into: innerBuffer, emitBlocked: true)
            ?? bn1.forward(conv1(x), then: relu)
        if !conv2.isTraining {
            // At inference the residual add and ReLU ride on conv2's output pass.
            let short = shortcut?.forward(x) ?? x
            if let y = conv2.forwardFolding(inner, bn2, relu: true, residual: short, into: output, emitBlocked: true) {
                return y.channelBlock == 0 || mayEmitBlocked ? y : inferenceOutput.plain(y)
            }
            return join.forward(bn2(conv2(inner)), short, mayEmitBlocked: mayEmitBlocked)
        }
        let main = conv2.forwardFolding(inner, bn2, relu: false) ?? bn2(conv2(inner))
        return join.forward(main, shortcut?.forward(x) ?? x, mayEmitBlocked: mayEmitBlocked)
    }

    public func backward(_ gradOutput: Tensor) -> Tensor {
        let g = join.backward(gradOutput)
        let gShort = join.shortcutGradient(g)
        // bn1's backward covers the ReLU after it (fused in forward).
        let dMain = conv1.backward(bn1.backward(conv2.backward(bn2.backward(g))))
        if !needsInputGradient {
            _ = shortcut?.backward(gShort)
            return dMain
        }
        return join.inputGradient(dMain, shortcut?.backward(gShort) ?? gShort)
    }
}

/// 1x1 → 3x3 → 1x1 bottleneck with expansion 4 (ResNet-50), torchvision layout
/// (stride on the 3x3 convolution): [N, C_in, H, W] → [N, 4·planes, H / stride, W / stride].
public final class Bottleneck: Layer {
    public static let expansion = 4
    public let conv1: Conv2d, bn1: BatchNorm2d, relu1: ReLU
    public let conv2: Conv2d, bn2: BatchNorm2d, relu2: ReLU
    public let conv3: Conv2d, bn3: BatchNorm2d
    public let downsample: Sequential?
    public var isTraining = true
    public var needsInputGradient = true {
        didSet { conv1.needsInputGradient = needsInputGradient; downsample?.needsInputGradient = needsInputGradient }
    }
    private let join = ResidualJoin()

    public init(_ inC: Int, width: Int, stride: Int, rng: inout RNG) {
        let outC = width * Bottleneck.expansion
        conv1 = Conv2d(inC, width, kernelSize: 1, rng: &rng)
        bn1 = BatchNorm2d(width)
        relu1 = ReLU()
        conv2 = Conv2d(width, width, kernelSize: 3, stride: stride, padding: 1, rng: &rng)
        bn2 = BatchNorm2d(width)
        relu2 = ReLU()
        conv3 = Conv2d(width, outC, kernelSize: 1, rng: &rng)
        bn3 = BatchNorm2d(outC)
        downsample = projection(inC, outC, stride: stride, rng: &rng)
    }

    public var children: [(String, any Layer)] {
        var c: [(String, any Layer)] = [("conv1", conv1), ("bn1", bn1), ("conv2", conv2), ("bn2", bn2),
                                        ("conv3", conv3), ("bn3", bn3), ("relu", relu1)]
        if let d = downsample { c.append(("downsample", d)) }
        return c
    }

    public func outputShape(for input: [Int]) -> [Int] {
        conv3.outputShape(for: conv2.outputShape(for: conv1.outputShape(for: input)))
    }

    public func forward(_ x: Tensor) -> Tensor {
        let mid = bn1.forward(conv1(x), then: relu1)
        let main = bn3(conv3(conv2.forwardFolding(mid, bn2, relu: true) ?? bn2.forward(conv2(mid), then: relu2)))
        return join.forward(main, downsample?.forward(x) ?? x, mayEmitBlocked: false)
    }

    public func backward(_ gradOutput: Tensor) -> Tensor {
        let g = join.backward(gradOutput)
        var d = conv3.backward(bn3.backward(g))
        // The batch norms' backward cover the ReLUs after them (fused in forward).
        d = conv2.backward(bn2.backward(d))
        d = conv1.backward(bn1.backward(d))
        if !needsInputGradient {
            _ = downsample?.backward(g)
            return d
        }
        return join.inputGradient(d, downsample?.backward(g) ?? g)
    }
}
