import ClickTrainCore
import ClickTrainSparse
import Foundation

/// 2-D convolution (groups = 1) as in `torch.nn.Conv2d`: input [N, in, H, W], weight
/// [out, in, k, k], bias [out], output [N, out, H', W'] with H' = (H + 2·padding − k) / stride + 1.
///
/// Dense kernels run on oneDNN; one kernel plan is kept per input shape and layout (the
/// last, smaller batch of an epoch gets its own), so a warmed-up step builds nothing. On
/// oneDNN the input may be channel-blocked and the output is blocked where the consumer
/// takes it (`mayEmitBlocked`); the pattern and sparse-error kernels work on NCHW.
public final class Conv2d: BlockedLayoutLayer {
    public let inChannels: Int, outChannels: Int, kernelSize: Int, stride: Int, padding: Int
    public let weight: Parameter
    public let bias: Parameter?
    public var isTraining = true
    public var needsInputGradient = true

    /// Activation-gradient pruning of the incoming gradient, with this layer's name.
    public var gradientPruning: (policy: GradientPruningPolicy, name: String)?
    /// After hard pruning (a mask is set) forward and backward run the pattern-sparse
    /// kernels instead of oneDNN (3x3 with padding 1, or 1x1 with padding 0 under
    /// connectivity pruning; stride 1 or 2).
    package var usePatternKernels = true
    /// The pattern format of the last forward, when it ran on the pattern kernels.
    private var lastPattern: PatternWeights?
    private var patternGrad: [Float] = []
    /// The pattern format built from the current mask (rebuilt only when the mask changes;
    /// each forward refreshes its values from the weight).
    private var patternCache: (mask: Tensor, weights: PatternWeights)?
    /// Whether the last forward ran on the pattern kernels.
    package var lastForwardUsedPatternKernels: Bool { patternCache != nil && lastForwardPattern }
    /// Whether the last backward ran the sparse error-map kernels (activation-gradient pruning).
    package private(set) var lastBackwardUsedSparseErrorKernels = false
    private var lastForwardPattern = false
    /// Time spent in `forward`, accumulated (for per-layer benchmarks).
    package var forwardSeconds = 0.0
    private var patternPlans: [ConvGeometry: PatternConvKernel] = [:]
    private struct PlanKey: Hashable { var geometry: ConvGeometry, srcBlock: Int, dstBlock: Int }
    private var plans: [PlanKey: DenseConv2dKernel] = [:]
    /// The oneDNN plan of the last forward (nil when it ran the pattern kernels).
    private var lastPlan: DenseConv2dKernel?
    /// Blocked input only where the forward runs on oneDNN: the pattern kernels take NCHW,
    /// so a pruned conv's producer hands it NCHW rather than have it converted here.
    package var acceptsBlocked: Bool {
        !(usePatternKernels && weight.mask != nil
          && PatternConvKernel.runs(kernelSize: kernelSize, stride: stride, padding: padding))
    }
    package var mayEmitBlocked = false
    /// False: the output is NCHW whatever the consumer takes (a twin with NCHW activations
    /// for tests and `bench --compare-layouts`; containers set `mayEmitBlocked` on every
    /// forward, this stays).
    package var allowsBlockedOutput = true
    /// The layout of the last forward's input (the input gradient goes back in it).
    private var inputBlock = 0
    package var lastInputBlock: Int { inputBlock }
    /// The layout of the last forward's output.
    package var lastOutputBlock: Int { outputs.last?.channelBlock ?? 0 }
    private var inputConversion = LayoutConverter(), residualConversion = LayoutConverter()
    private var gradInputConversion = LayoutConverter()
    private var sparsePlans: [ConvGeometry: SparseErrorConvKernel] = [:]
    private var prunedGrads = BufferCache()
    private var input: Tensor?
    /// Shape of the last input (per-layer benchmarks rebuild the layer's geometry from it).
    public var lastInputShape: [Int]? { input?.shape }
    private var outputs = BufferCache()
    private var gradInputs = BufferCache()

    /// Kaiming-normal init (`mode='fan_out'`, ReLU gain), as torchvision's ResNets do.
    public init(_ inChannels: Int, _ outChannels: Int, kernelSize: Int, stride: Int = 1, padding: Int = 0,
                bias: Bool = false, rng: inout RNG) {
        precondition(inChannels > 0 && outChannels > 0 && kernelSize > 0 && stride > 0 && padding >= 0,
                     "Conv2d: invalid configuration \(inChannels)->\(outChannels) k\(kernelSize) s\(stride) p\(padding)")
        self.inChannels = inChannels
        self.outChannels = outChannels
        self.kernelSize = kernelSize
        self.stride = stride
        self.padding = padding
        let w = Tensor(shape: [outChannels, inChannels, kernelSize, kernelSize])
        let std = (2.0 / Float(outChannels * kernelSize * kernelSize)).squareRoot()
        for i in 0..<w.count { w[i] = rng.normal() * std }
        weight = Parameter(w)
        if bias {
            let b = Tensor(shape: [outChannels])
            let bound = 1 / Float(inChannels * kernelSize * kernelSize).squareRoot()
            for i in 0..<outChannels { b[i] = (rng.uniform() * 2 - 1) * bound }
            self.bias = Parameter(b, isBiasOrNorm: true)
        } else {
            self.bias = nil
        }
    }

    /// Wraps given weights (channel pruning builds smaller layers this way).
    public init(weight w: Tensor, bias b: Tensor?, stride: Int, padding: Int) {
        precondition(w.rank == 4 && w.shape[2] == w.shape[3], "Conv2d(weight:): \(w.shape)")
        outChannels = w.shape[0]
        inChannels = w.shape[1]
        kernelSize = w.shape[2]
        self.stride = stride
        self.padding = padding
        weight = Parameter(w)
        bias = b.map { Parameter($0, isBiasOrNorm: true) }
    }

    /// A copy keeping only the given output and/or input channels.
    public func keeping(outputChannels outs: [Int]? = nil, inputChannels ins: [Int]? = nil) -> Conv2d {
        var w = weight.value
        if let o = outs { w = w.keeping(axis: 0, indices: o) }
        if let i = ins { w = w.keeping(axis: 1, indices: i) }
        let b = bias.map { b in outs.map { b.value.keeping(axis: 0, indices: $0) } ?? b.value.clone() }
        let c = Conv2d(weight: w === weight.value ? w.clone() : w, bias: b, stride: stride, padding: padding)
        c.isTraining = isTraining
        c.needsInputGradient = needsInputGradient
        c.mayEmitBlocked = mayEmitBlocked
        c.allowsBlockedOutput = allowsBlockedOutput
        return c
    }

    public var localState: [(String, StateEntry)] {
        var s: [(String, StateEntry)] = [("weight", .parameter(weight))]
        if let b = bias { s.append(("bias", .parameter(b))) }
        return s
    }

    package func geometry(for shape: [Int]) -> ConvGeometry {
        precondition(shape.count == 4 && shape[1] == inChannels,
                     "Conv2d(\(inChannels)->\(outChannels)): input \(shape), expected [N, \(inChannels), H, W]")
        return ConvGeometry(batch: shape[0], inChannels: inChannels, height: shape[2], width: shape[3],
                            outChannels: outChannels, kernelSize: kernelSize, stride: stride, padding: padding)
    }

    public func outputShape(for input: [Int]) -> [Int] { geometry(for: input).outputShape }

    private func plan(_ g: ConvGeometry, srcBlock: Int = 0, dstBlock: Int = 0) -> DenseConv2dKernel {
        let key = PlanKey(geometry: g, srcBlock: srcBlock, dstBlock: dstBlock)
        if let p = plans[key] { return p }
        let p = DenseConv2dKernel(g, bias: bias != nil, srcBlock: srcBlock, dstBlock: dstBlock)
        plans[key] = p
        return p
    }

    public func forward(_ x: Tensor) -> Tensor {
        let profileStart = WorkProfile.start()
        defer { WorkProfile.stop(.convForward, since: profileStart) }
        let t0 = DispatchTime.now().uptimeNanoseconds
        defer { forwardSeconds += Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9 }
        let g = geometry(for: x.shape)
        let y = outputs.get(g.outputShape)
        inputBlock = x.channelBlock
        lastPattern = nil
        lastForwardPattern = false
        if usePatternKernels, let mask = weight.mask, let pg = PatternConvKernel.embeddedGeometry(g) {
            let (k, pw) = patternKernel(g, pg, mask)
            lastForwardPattern = true
            let xin = inputConversion.plain(x)
            input = xin
            lastPlan = nil
            k.forward(input: xin, weights: pw, bias: bias?.value, output: y)
            y.channelBlock = 0
            if isTraining { lastPattern = pw }
            return y
        }
        if gradientPruning != nil {
            // Activation-gradient pruning draws its zeros by NCHW position.
            input = inputConversion.plain(x)
            lastPlan = plan(g)
        } else {
            input = x
            let dst = mayEmitBlocked && allowsBlockedOutput && ChannelBlocking.canBlock(g.outputShape) ? ChannelBlocking.size! : 0
            lastPlan = plan(g, srcBlock: x.channelBlock, dstBlock: dst)
        }
        lastPlan!.forward(input: input!, weight: weight.value, bias: bias?.value, output: y)
        return y
    }

    /// At inference: `bn(conv(x))`, plus `residual` when given, then ReLU when `relu`, in
    /// one pass, the batch norm folded into the weights (scale per filter) and the bias
    /// (shift). Pruned (and small) convs run it on the pattern kernels, residual and ReLU
    /// applied as tiles are written; the others on oneDNN with the residual and ReLU as
    /// post-ops, the output blocked when `emitBlocked`. nil when it does not apply
    /// (training, batch norm in training mode, folding off); the caller then runs the
    /// layers one by one. `output`, when given, receives the result (shared inference
    /// buffers, see `Sequential.forward`); otherwise the layer's own buffer does.
    package func forwardFolding(_ x: Tensor, _ bn: BatchNorm2d, relu: Bool, residual: Tensor? = nil,
                               into output: Tensor? = nil, emitBlocked: Bool = false) -> Tensor? {
        let t0 = DispatchTime.now().uptimeNanoseconds
        defer { forwardSeconds += Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9 }
        guard let f = folded(for: x.shape, bn) else {
            return denseFolding(x, bn, relu: relu, residual: residual, into: output, emitBlocked: emitBlocked)
        }
        let g = geometry(for: x.shape)
        precondition(output == nil || output!.shape == g.outputShape, "forwardFolding: output buffer shape")
        let y = output ?? outputs.get(g.outputShape)
        let xin = inputConversion.plain(x)
        input = xin
        inputBlock = x.channelBlock
        lastPlan = nil
        // The next layer reads y at once: stored through the caches, not streamed past them.
        f.kernel.forward(input: xin, weights: f.weights, bias: f.shift, output: y, relu: relu,
                         residual: residual.map { residualConversion.plain($0) }, streamOutput: false)
        y.channelBlock = 0
        return y
    }

    /// At inference on the pattern kernels, this conv with `bn` folded into it (weights
    /// scaled per filter, the shift as bias) for inputs of `shape`; nil when folding does
    /// not apply (see `forwardFolding`). Counts as a folded forward.
    private func folded(for shape: [Int], _ bn: BatchNorm2d) -> (kernel: PatternConvKernel, weights: PatternWeights, shift: Tensor)? {
        guard !isTraining, !bn.isTraining, foldBatchNormAtInference, usePatternKernels, bn.channels == outChannels,
              let mask = weight.mask ?? smallDenseMask else { return nil }
        let g = geometry(for: shape)
        guard let pg = PatternConvKernel.embeddedGeometry(g) else { return nil }
        let (k, pw) = patternKernel(g, pg, mask)
        var scale = [Float](repeating: 0, count: outChannels)
        let shift = foldedShift.get([outChannels])
        for f in 0..<outChannels {
            scale[f] = bn.weight.value[f] / (bn.runningVar[f] + bn.eps).squareRoot()
            shift[f] = bn.bias.value[f] + ((bias?.value[f] ?? 0) - bn.runningMean[f]) * scale[f]
        }
        lastPattern = nil
        foldedForwards += 1
        lastForwardPattern = true
        return (k, pw.scaledPerFilter(scale), shift)
    }

    /// The pattern kernel for geometry `g` (run as `pg`) and the weight's pattern format
    /// under `mask` (1x1 kernels as centre taps). The structure is built once per mask; a
    /// step only gathers the kept values.
    private func patternKernel(_ g: ConvGeometry, _ pg: ConvGeometry, _ mask: Tensor) -> (PatternConvKernel, PatternWeights) {
        let k = patternPlans[g] ?? PatternConvKernel(pg)
        patternPlans[g] = k
        let pw: PatternWeights
        if let c = patternCache, c.mask === mask {
            pw = c.weights.refreshed(from: weight.value)
        } else if kernelSize == 1 {
            pw = PatternWeights(pointwise: weight.value, mask: mask)
        } else {
            pw = PatternWeights(weight: weight.value, mask: mask)
        }
        patternCache = (mask, pw)
        return (k, pw)
    }

    private struct FoldKey: Hashable {
        var geometry: ConvGeometry, srcBlock: Int, dstBlock: Int, residual: Bool, relu: Bool
    }
    private var foldPlans: [FoldKey: FoldedConv2dKernel] = [:]
    private var foldedWeight = BufferCache()

    /// `forwardFolding` of an unpruned conv, on oneDNN (see there).
    private func denseFolding(_ x: Tensor, _ bn: BatchNorm2d, relu: Bool, residual: Tensor?, into output: Tensor?,
                              emitBlocked: Bool) -> Tensor? {
        guard !isTraining, !bn.isTraining, foldBatchNormAtInference, bn.channels == outChannels, weight.mask == nil
        else { return nil }
        let g = geometry(for: x.shape)
        precondition(output == nil || output!.shape == g.outputShape, "forwardFolding: output buffer shape")
        let dst = emitBlocked && allowsBlockedOutput && ChannelBlocking.canBlock(g.outputShape) ? ChannelBlocking.size! : 0
        let key = FoldKey(geometry: g, srcBlock: x.channelBlock, dstBlock: dst, residual: residual != nil, relu: relu)
        let k = foldPlans[key] ?? FoldedConv2dKernel(g, srcBlock: key.srcBlock, dstBlock: dst, residual: key.residual,
                                                     relu: relu)
        foldPlans[key] = k
        let w = foldedWeight.get(weight.value.shape), shift = foldedShift.get([outChannels])
        let perFilter = inChannels * kernelSize * kernelSize
        let src = weight.value.data, folded = w.data
        for f in 0..<outChannels {
            let scale = bn.weight.value[f] / (bn.runningVar[f] + bn.eps).squareRoot()
            shift[f] = bn.bias.value[f] + ((bias?.value[f] ?? 0) - bn.runningMean[f]) * scale
            for i in (f * perFilter)..<((f + 1) * perFilter) { folded[i] = src[i] * scale }
        }
        let y = output ?? outputs.get(g.outputShape)
        // The sum post-op adds the output buffer's contents: the residual, in the output's layout.
        if let r = residual { residualConversion.convert(r, into: y, block: dst) }
        k.forward(input: x, weight: w, bias: shift, output: y)
        input = x
        inputBlock = x.channelBlock
        lastPlan = nil
        lastPattern = nil
        lastForwardPattern = false
        foldedForwards += 1
        return y
    }

    /// Whether `forwardFolding` may fold batch norms at inference (tests compare both ways).
    package var foldBatchNormAtInference = true
    /// Unpruned convs with at most this many weights per filter (C·k², e.g. a ResNet's
    /// 3-channel stem or its 1x1 projection shortcuts) also fold onto the pattern kernels
    /// at inference, every weight kept: oneDNN's fixed costs dominate such small convs
    /// (ResNet-32's stem: 2.0 ms on oneDNN for 57 M multiply-adds, see the README).
    package static let smallDenseFoldMaxWeights = 32
    private var denseMask: Tensor?
    /// An all-ones mask when this unpruned conv is small enough to fold (see above).
    private var smallDenseMask: Tensor? {
        guard inChannels * kernelSize * kernelSize <= Conv2d.smallDenseFoldMaxWeights else { return nil }
        if let m = denseMask, m.shape == weight.value.shape { return m }
        let m = Tensor(shape: weight.value.shape)
        m.fill(1)
        denseMask = m
        return m
    }
    /// Forward passes that ran with a folded batch norm.
    package private(set) var foldedForwards = 0
    private var foldedShift = BufferCache()

    public func backward(_ gradOutput: Tensor) -> Tensor {
        let profileStart = WorkProfile.start()
        defer { WorkProfile.stop(.convBackward, since: profileStart) }
        guard let x = input else { preconditionFailure("Conv2d.backward before forward") }
        let g = geometry(for: x.shape)
        lastBackwardUsedSparseErrorKernels = false
        var gi: Tensor? = nil
        if needsInputGradient {
            gi = gradInputs.get(x.shape)
            gi!.channelBlock = x.channelBlock
        }
        precondition(gradOutput.channelBlock == lastOutputBlock, "Conv2d.backward: gradient layout differs from the output's")
        if let pw = lastPattern, let k = patternPlans[g] {
            // Pattern-sparse backward: input gradient and the kept weights' gradients.
            var dy = gradOutput
            if let (policy, name) = gradientPruning, policy.enabled {
                dy = prunedGrads.get(gradOutput.shape)
                policy.prune(gradOutput, into: dy, layer: name)
            }
            if patternGrad.count < pw.nonZeros { patternGrad = [Float](repeating: 0, count: pw.nonZeros) }
            patternGrad.withUnsafeMutableBufferPointer { gv in
                k.backward(input: x, weights: pw, gradOutput: dy, gradInput: gi, gradValues: gv.baseAddress!,
                           gradBias: bias?.grad)
                weight.grad.zero()
                let gw = weight.grad.data
                for (i, p) in pw.position.enumerated() { gw[Int(p)] = gv[i] }
            }
            return converted(gi) ?? gradOutput
        }
        guard let (policy, name) = gradientPruning, let plainPlan = lastPlan else {
            guard let p = lastPlan else { preconditionFailure("Conv2d.backward: no plan of the last forward") }
            p.backward(input: x, weight: weight.value, gradOutput: gradOutput, gradInput: gi,
                       gradWeight: weight.grad, gradBias: bias?.grad)
            return converted(gi) ?? gradOutput
        }
        let t0 = DispatchTime.now().uptimeNanoseconds
        lastBackwardUsedSparseErrorKernels = policy.prefersSparseKernels(layer: name) && SparseErrorConvKernel.supports(g)
            && g.inChannels >= policy.sparseKernelMinChannels
        if lastBackwardUsedSparseErrorKernels {
            // Pruning fused into the kernels that skip the zeros.
            let k = sparsePlans[g] ?? SparseErrorConvKernel(g)
            sparsePlans[g] = k
            let (tau, key, _) = policy.nextPruning(gradOutput)
            let zeros = k.backward(input: x, weight: weight.value, gradOutput: gradOutput, tau: tau, key: key,
                                   gradInput: gi, gradWeight: weight.grad, gradBias: bias?.grad)
            policy.record(layer: name, zeros: zeros, elements: gradOutput.count)
        } else {
            var dy = gradOutput
            if policy.enabled {
                dy = prunedGrads.get(gradOutput.shape)
                policy.prune(gradOutput, into: dy, layer: name)
            }
            plainPlan.backward(input: x, weight: weight.value, gradOutput: dy, gradInput: gi,
                               gradWeight: weight.grad, gradBias: bias?.grad)
        }
        let dt = Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9
        policy.convBackwardSeconds += dt
        policy.layerBackwardSeconds[name, default: 0] += dt
        return converted(gi) ?? gradOutput
    }

    /// The input gradient in the layout the input came in.
    private func converted(_ gi: Tensor?) -> Tensor? {
        guard let d = gi else { return nil }
        return d.channelBlock == inputBlock ? d : gradInputConversion.converted(d, to: inputBlock)
    }
}
