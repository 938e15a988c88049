import ClickTrainCore

/// Forward convolution with pattern-sparse 3x3 weights (padding 1, stride 1 or 2) and its
/// two backward convolutions; the work is proportional to the kept taps.
///
/// Each image is written once per pass into a per-thread buffer of shifted copies laid out
/// on the output grid (`Shifted`: per input channel 3·stride copies, one per (column tap,
/// row parity)), so that every tap reads one contiguous run over the whole output plane.
/// Outputs are computed in tiles of up to 128 positions (64 in a SIMD8 build; 32, 16, 8
/// at the plane's end; `Generated/PatternTiles.swift`) held in registers across every kept
/// tap of a filter: per tap one broadcast weight and one load plus one fused multiply-add
/// per register, no accumulator traffic; a finished tile is stored straight into the output
/// with the bias, residual and ReLU applied. The weight gradient keeps a tile of the output
/// gradient in registers and streams the kept taps' input copies past it. For 8x8 outputs
/// with 4-tap kernels both the forward and the weight gradient hold a (channel, pattern)
/// group's four input taps in registers instead and stream the group's kernels past them
/// (their output planes, or their output gradients). The input
/// gradient at stride 1 is the same gather over the output gradient's shifted copies with
/// the kernels transposed and mirrored (8x8: by (filter, pattern) group). At stride 2 the
/// input's parity plane (2i + a, 2j + b) reads the output gradient at (i + u, j + v), u, v
/// in {0, 1}: for output widths 8-64 an input channel's four planes are computed together
/// in registers by source (`stride2InputGradient`) and interleaved straight into dx; other
/// even sizes gather whole planes and interleave them; odd sizes gather per parity plane
/// over a padded grid with negated offsets. Which of these paths a layer takes is chosen
/// once for its geometry (`PatternStrategy`).
///
/// The kernel caches the tap offsets of the last weight structure it saw (kept kernels and
/// patterns); a weight with the same structure and new values (a training step after hard
/// pruning) reuses them. A 1x1 convolution runs here as the 3x3 of `embeddedGeometry`.
package final class PatternConvKernel {
    package let geometry: ConvGeometry
    /// Which paths this geometry runs, chosen in `init` (`PatternStrategy(geometry)`). Tests
    /// may turn paths off to reach the others; a path turned on where the geometry's choice
    /// does not run it is refused. A new strategy drops the cached plan.
    @_spi(Testing) public var strategy: PatternStrategy {
        didSet {
            precondition(strategy.onlyTurnsOff(PatternStrategy(geometry)),
                         "PatternConvKernel.strategy: \(strategy) runs a path that \(geometry) does not allow")
            plan = nil
        }
    }
    let chunks: Int
    /// Per chunk: one tile of results before it is copied out (a tile passing the plane's end,
    /// the stride-2 input gradient).
    let scratch: [Tensor]
    var backwardBuffers: (grid: [Tensor], dw: [Tensor], planes: [Tensor])?
    /// Source plane layout: rows × pitch per (parity) plane, planes per channel.
    let rows: Int, pitch: Int, phases: Int
    /// Output positions over the pitch (the span), rounded up to whole SIMD8 vectors.
    private let spanR: Int
    /// Where tap t = (ky, kx) reads for the output at (0, 0), in a channel's planes.
    package let tapOffsets: [Int]
    let margin: Int
    /// Stride-2 input-gradient tiles over the parity planes.
    let inputGradTiles: Tiles
    /// Stride 2: floats per input channel of the input gradient's four parity planes (on the
    /// grid's pitch), which the tiles write whole before they are interleaved into dx.
    let planeStride: Int
    /// Output-gradient grid: per filter margin + plane + margin floats.
    let gridStride: Int
    private var plan: Plan?
    /// The shifted-copy layout (`Shifted`) of the forward and weight-gradient inputs (and,
    /// at stride 1, of the output gradient for the input gradient); per-chunk buffers of
    /// max(C, K) channels, made at first use.
    let shifted: Shifted
    /// Stride 2 with H and W even: the input gradient's four parity planes (y = 2i + a,
    /// x = 2j + b) each read the output gradient at (i + u, j + v), u, v in {0, 1}: a
    /// stride-1 gather over the output gradient's shifted copies (this layout, for an
    /// OH x OW plane; copies kx = 1 and 2 only) with one contiguous run per plane of OH·OW
    /// positions. Nil otherwise (odd sizes take the padded-grid path).
    let dyShifted: Shifted?
    private var shiftedBuffers: [Tensor] = []
    /// Copies of `strategy.smallPlaneImagesPerPass` images side by side per chunk (the
    /// 64-position plane weight gradient).
    var multiImageBuffers: [Tensor] = []

    package static func supports(_ g: ConvGeometry) -> Bool {
        g.kernelSize == 3 && g.padding == 1 && (g.stride == 1 || g.stride == 2)
    }

    /// Whether a convolution with these parameters runs on these kernels (see
    /// `embeddedGeometry`), whatever its input size.
    package static func runs(kernelSize k: Int, stride s: Int, padding p: Int) -> Bool {
        (k == 3 && p == 1 || k == 1 && p == 0) && (s == 1 || s == 2)
    }

    /// The geometry these kernels run a convolution as: itself for 3x3 with padding 1, the
    /// equivalent 3x3 (padding 1, centre tap only) for 1x1 with padding 0; nil otherwise.
    /// Strides 1 and 2.
    package static func embeddedGeometry(_ g: ConvGeometry) -> ConvGeometry? {
        if supports(g) { return g }
        guard runs(kernelSize: g.kernelSize, stride: g.stride, padding: g.padding) else { return nil }
        let e = ConvGeometry(batch: g.batch, inChannels: g.inChannels, height: g.height, width: g.width,
                             outChannels: g.outChannels, kernelSize: 3, stride: g.stride, padding: 1)
        return e.outputShape == g.outputShape ? e : nil
    }

    package init(_ g: ConvGeometry) {
        precondition(PatternConvKernel.supports(g), "pattern conv needs 3x3, padding 1, stride 1 or 2: \(g)")
        geometry = g
        strategy = PatternStrategy(g)
        chunks = max(1, min(Threads.count, g.batch))
        let (r, p, ph) = g.stride == 1 ? (g.height + 2, g.width + 2, 1) : ((g.height + 3) / 2, (g.width + 3) / 2, 4)
        (rows, pitch, phases) = (r, p, ph)
        let (oh, ow, h, w) = (g.outHeight, g.outWidth, g.height, g.width)
        spanR = ((oh - 1) * p + ow + 7) / 8 * 8
        tapOffsets = (0..<9).map { t in
            let (py, px) = (t / 3, t % 3)
            return ph == 1 ? py * p + px : ((py & 1) * 2 + (px & 1)) * r * p + (py >> 1) * p + (px >> 1)
        }
        margin = (tapOffsets.max()! + 15) / 16 * 16
        var bt = Tiles()
        var gridEnd = 0
        let evenPlanes = g.stride == 2 && h % 2 == 0 && w % 2 == 0
        if evenPlanes {
            dyShifted = Shifted(ConvGeometry(batch: g.batch, inChannels: g.outChannels, height: oh, width: ow,
                                             outChannels: g.inChannels, kernelSize: 3, stride: 1, padding: 1))
            planeStride = 4 * oh * ow
        } else {
            dyShifted = nil
            if ph == 4 {
                // Plane (py, px) position (i, j) is the input gradient at (2i + py − 1, 2j + px − 1).
                let rp = r * p, count = (rp + 7) / 8 * 8
                for phase in 0..<4 { bt.add(lo: phase * rp, count: count, phase: phase) }
                gridEnd = 3 * rp + count
            }
            planeStride = (gridEnd + 64 + 15) / 16 * 16
        }
        inputGradTiles = bt
        shifted = Shifted(g)
        gridStride = margin + max(gridEnd, spanR + 64) + margin
        scratch = (0..<chunks).map { _ in Tensor(shape: [64]) }
    }

    func planFor(_ pw: PatternWeights) -> Plan {
        if let p = plan, p.matches(pw) { return p }
        let p = makePlan(pw)
        plan = p
        return p
    }

    /// Per-chunk shifted-copy buffers for max(C, K) channels.
    func shiftedChunkBuffers() -> [UnsafeMutablePointer<Float>] {
        if shiftedBuffers.isEmpty {
            let channels = max(geometry.inChannels, geometry.outChannels)
            shiftedBuffers = (0..<chunks).map { _ in Tensor(shape: [channels * shifted.channelStride + 16]) }
        }
        return shiftedBuffers.map(\.data)
    }
}
