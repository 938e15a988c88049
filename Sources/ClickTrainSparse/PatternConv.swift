import ClickTrainCore

/// A pattern-pruned 3x3 conv weight in a compact format (in the spirit of PatDNN's
/// filter-kernel-weight layout): per output channel, its kept input channels, each
/// with the tap offsets and values of its pattern, kernels of one filter grouped by
/// pattern. Built from the weight's non-zeros in one pass.
public struct PatternWeights: Sendable {
    public let outChannels: Int, inChannels: Int
    /// Kernels of filter f are entries rowStart[f]..<rowStart[f+1].
    public let rowStart: [Int32]
    /// Input channel of each kept kernel.
    public let channel: [Int32]
    /// Start of each kernel's taps in `tap`/`value` (kernels may keep different counts).
    public let tapStart: [Int32]
    /// Tap position 0…8 (row-major in the 3x3 window) and weight of every kept tap.
    public let tap: [UInt8]
    public private(set) var value: [Float]
    /// Index of each value in the dense [K, C, 3, 3] weight.
    public let position: [Int32]

    /// - Parameters:
    ///   - weight: [K, C, 3, 3].
    ///   - mask: which taps are kept (non-zero); without it, the weight's non-zeros. A
    ///     kernel with nothing kept is removed, as connectivity pruning does.
    public init(weight: Tensor, mask: Tensor? = nil) {
        precondition(weight.rank == 4 && weight.shape[2] == 3 && weight.shape[3] == 3,
                     "PatternWeights: weight \(weight.shape), expected [K, C, 3, 3]")
        outChannels = weight.shape[0]
        inChannels = weight.shape[1]
        var rs: [Int32] = [0], ch: [Int32] = [], ts: [Int32] = [0], tp: [UInt8] = [], vs: [Float] = [], pos: [Int32] = []
        ch.reserveCapacity(outChannels * inChannels)
        for f in 0..<outChannels {
            // Group the filter's kernels by pattern (bitmask of kept taps).
            var kernels: [(UInt16, Int)] = []
            for c in 0..<inChannels {
                var bits: UInt16 = 0
                let keep = mask ?? weight
                for t in 0..<9 where keep[(f * inChannels + c) * 9 + t] != 0 { bits |= 1 << t }
                if bits != 0 { kernels.append((bits, c)) }
            }
            kernels.sort { $0.0 != $1.0 ? $0.0 < $1.0 : $0.1 < $1.1 }
            for (bits, c) in kernels {
                ch.append(Int32(c))
                for t in 0..<9 where bits & (1 << t) != 0 {
                    tp.append(UInt8(t))
                    vs.append(weight[(f * inChannels + c) * 9 + t])
                    pos.append(Int32((f * inChannels + c) * 9 + t))
                }
                ts.append(Int32(tp.count))
            }
            rs.append(Int32(ch.count))
        }
        rowStart = rs
        channel = ch
        tapStart = ts
        tap = tp
        value = vs
        position = pos
    }

    /// A 1x1 convolution's weight [K, C, 1, 1] under connectivity pruning, as a 3x3
    /// pattern format whose kernels keep only the centre tap: a 1x1 conv with padding 0
    /// equals a 3x3 conv with padding 1 and only the centre weight, at strides 1 and 2
    /// (see `PatternConvKernel.embeddedGeometry`). `position` indexes the 1x1 weight.
    public init(pointwise weight: Tensor, mask: Tensor? = nil) {
        precondition(weight.rank == 4 && weight.shape[2] == 1 && weight.shape[3] == 1,
                     "PatternWeights(pointwise:): weight \(weight.shape), expected [K, C, 1, 1]")
        outChannels = weight.shape[0]
        inChannels = weight.shape[1]
        var rs: [Int32] = [0], ch: [Int32] = [], ts: [Int32] = [0], vs: [Float] = [], pos: [Int32] = []
        let keep = mask ?? weight
        for f in 0..<outChannels {
            for c in 0..<inChannels where keep[f * inChannels + c] != 0 {
                ch.append(Int32(c))
                vs.append(weight[f * inChannels + c])
                pos.append(Int32(f * inChannels + c))
                ts.append(Int32(vs.count))
            }
            rs.append(Int32(ch.count))
        }
        rowStart = rs
        channel = ch
        tapStart = ts
        tap = [UInt8](repeating: 4, count: vs.count)
        value = vs
        position = pos
    }

    public var keptKernels: Int { channel.count }

    /// The same structure with the values of `weight` at the kept positions (a training
    /// step after hard pruning changes the values, never the structure).
    public func refreshed(from weight: Tensor) -> PatternWeights {
        precondition(weight.count == outChannels * inChannels * 9 || (weight.count == outChannels * inChannels && tap.allSatisfy { $0 == 4 }),
                     "PatternWeights.refreshed: weight \(weight.shape) for \(outChannels)x\(inChannels) kernels")
        var copy = self
        let w = weight.data
        copy.value = position.map { w[Int($0)] }
        return copy
    }

    /// The same kernels indexed by input channel: for channel c, entries
    /// rowStart[c]..<rowStart[c+1] give the filter (`channel`), taps and the index of each
    /// tap's value in the original `value` array (`valueIndex`), for the input gradient.
    public func byInputChannel() -> (rowStart: [Int32], filter: [Int32], tapStart: [Int32], tap: [UInt8], valueIndex: [Int32]) {
        var lists = [[Int]](repeating: [], count: inChannels)  // entry indices per channel
        for f in 0..<outChannels { for e in Int(rowStart[f])..<Int(rowStart[f + 1]) { lists[Int(channel[e])].append(e) } }
        var filterOf = [Int32](repeating: 0, count: channel.count)
        for f in 0..<outChannels { for e in Int(rowStart[f])..<Int(rowStart[f + 1]) { filterOf[e] = Int32(f) } }
        var rs: [Int32] = [0], fl: [Int32] = [], ts: [Int32] = [0], tp: [UInt8] = [], vi: [Int32] = []
        for c in 0..<inChannels {
            for e in lists[c] {
                fl.append(filterOf[e])
                for i in Int(tapStart[e])..<Int(tapStart[e + 1]) { tp.append(tap[i]); vi.append(Int32(i)) }
                ts.append(Int32(tp.count))
            }
            rs.append(Int32(fl.count))
        }
        return (rs, fl, ts, tp, vi)
    }
    public var nonZeros: Int { value.count }

    /// The same weights with filter f's values multiplied by scale[f] (a batch norm folded
    /// into the convolution at inference).
    public func scaledPerFilter(_ scale: [Float]) -> PatternWeights {
        precondition(scale.count == outChannels, "PatternWeights.scaledPerFilter: \(scale.count) scales for \(outChannels) filters")
        var copy = self
        for f in 0..<outChannels {
            let s = scale[f]
            for i in Int(tapStart[Int(rowStart[f])])..<Int(tapStart[Int(rowStart[f + 1])]) { copy.value[i] *= s }
        }
        return copy
    }

    /// The same weights as CSR over the im2col weight matrix [K, C·9]: row pointers,
    /// column indices (c·9 + tap), values.
    public func csr() -> (rowPtr: [Int32], column: [Int32], value: [Float]) {
        var rp: [Int32] = [0], col: [Int32] = []
        var vals: [Float] = []
        for f in 0..<outChannels {
            var row: [(Int32, Float)] = []
            for e in Int(rowStart[f])..<Int(rowStart[f + 1]) {
                for i in Int(tapStart[e])..<Int(tapStart[e + 1]) { row.append((channel[e] * 9 + Int32(tap[i]), value[i])) }
            }
            row.sort { $0.0 < $1.0 }
            col += row.map(\.0)
            vals += row.map(\.1)
            rp.append(Int32(col.count))
        }
        return (rp, col, vals)
    }

    /// Back to a dense [K, C, 3, 3] weight (round-trip checks).
    public func dense() -> Tensor {
        let w = Tensor(shape: [outChannels, inChannels, 3, 3])
        for f in 0..<outChannels {
            for e in Int(rowStart[f])..<Int(rowStart[f + 1]) {
                for i in Int(tapStart[e])..<Int(tapStart[e + 1]) {
                    w[(f * inChannels + Int(channel[e])) * 9 + Int(tap[i])] = value[i]
                }
            }
        }
        return w
    }
}

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
/// over a padded grid with negated offsets.
///
/// The kernel caches the tap offsets of the last weight structure it saw (kept kernels and
/// patterns); a weight with the same structure and new values (a training step after hard
/// pruning) reuses them. A 1x1 convolution runs here as the 3x3 of `embeddedGeometry`.
public final class PatternConvKernel {
    public let geometry: ConvGeometry
    private let chunks: Int
    /// Per chunk: one tile of results before it is copied out (a tile passing the plane's end,
    /// the stride-2 input gradient).
    private let scratch: [Tensor]
    private var backwardBuffers: (grid: [Tensor], dw: [Tensor], planes: [Tensor])?
    /// Source plane layout: rows × pitch per (parity) plane, planes per channel.
    private let rows: Int, pitch: Int, phases: Int
    /// Output positions over the pitch (the span), rounded up to whole SIMD8 vectors.
    private let spanR: Int
    /// Where tap t = (ky, kx) reads for the output at (0, 0), in a channel's planes.
    public let tapOffsets: [Int]
    private let margin: Int
    /// Stride-2 input-gradient tiles over the parity planes.
    private let inputGradTiles: Tiles
    /// Stride 2: floats per input channel of the input gradient's four parity planes (on the
    /// grid's pitch), which the tiles write whole before they are interleaved into dx.
    private let planeStride: Int
    /// Output-gradient grid: per filter margin + plane + margin floats.
    private let gridStride: Int
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
    /// Copies of `smallPlaneImagesPerPass` images side by side per chunk (the 64-position
    /// plane weight gradient).
    private var multiImageBuffers: [Tensor] = []

    /// The forward pass reads each input channel as 3·stride shifted copies laid out on the
    /// output grid: copy (kx, py) row r holds x[stride·r + py − 1][stride·ox + kx − 1] at
    /// column ox (zero outside the image). Tap (ky, kx) for the output at q = oy·OW + ox
    /// then reads copy (kx, ky mod stride) at q + (ky / stride)·OW: one contiguous run over
    /// the whole output plane, so tiles cover OH·OW positions with no pad columns, write
    /// straight into the output (no scratch, no copy-out segments), and when OW is a
    /// multiple of 16 every load is 64-byte aligned.
    struct Shifted {
        let stride: Int, rows: Int, width: Int, positions: Int
        /// Floats per copy and per input channel (3·stride copies).
        let copyStride: Int, channelStride: Int
        /// Where tap t reads for the output at q = 0, from its channel's first copy; the same
        /// in bytes, and in bytes for tap 8 − t (the input gradient's mirrored kernels).
        let tapOffsets: [Int], tapBytes: [Int], mirroredTapBytes: [Int]
        /// Stride 1: lane masks (all ones: keep, zero: the column is outside the image) for a
        /// run of 16 outputs starting at column m of a row, m in 0..<OW: for copy kx = 0
        /// (column 0 reads x[·][−1]) and copy kx = 2 (column OW − 1 reads x[·][OW]).
        let edgeMask0: [SIMD16<UInt32>], edgeMask2: [SIMD16<UInt32>]
        /// Gather tiles over 0..<positions: start, width (`gatherTileMax`, 64, 32, 16 or 8);
        /// the last may pass the end (`positions` not a multiple of 8) and then goes through
        /// the scratch tile. The weight gradient uses the same tiles.
        let tileStart: [Int], tileWidth: [Int]
        /// Channels whose rows the fill reads side by side (`stride2Fill`, `stride1Fill`): 8 for
        /// planes of 1024 or more floats (each channel a page or more of the input), else 1 (on
        /// 16x16 planes 8 measured 0.93-0.96x at stride 1, 0.83-0.91x at stride 2).
        let fillChannelGroup: Int

        init(_ g: ConvGeometry) {
            let s = g.stride, oh = g.outHeight, ow = g.outWidth
            stride = s
            width = ow
            rows = oh + 2 / s
            positions = oh * ow
            // Reads reach (2 / s)·OW + positions rounded up to 8, past the rows by < 8.
            let cs = ((oh + 2 / s) * ow + 8 + 15) / 16 * 16
            copyStride = cs
            channelStride = 3 * s * cs
            tapOffsets = (0..<9).map { t in
                let (ky, kx) = (t / 3, t % 3)
                return (kx * s + ky % s) * cs + (ky / s) * ow
            }
            tapBytes = tapOffsets.map { $0 * 4 }
            mirroredTapBytes = tapBytes.reversed()
            func masks(zeroAt column: Int) -> [SIMD16<UInt32>] {
                s != 1 ? [] : (0..<ow).map { m in
                    var v = SIMD16<UInt32>(repeating: .max)
                    for l in 0..<16 where (m + l) % ow == column { v[l] = 0 }
                    return v
                }
            }
            edgeMask0 = masks(zeroAt: 0)
            edgeMask2 = masks(zeroAt: ow - 1)
            func tiles(upTo most: Int) -> ([Int], [Int]) {
                var ts: [Int] = [], tw: [Int] = []
                var q = 0
                while q < oh * ow {
                    let w = [most, 64, 32, 16].first { $0 <= oh * ow - q } ?? 8
                    ts.append(q); tw.append(w)
                    q += w
                }
                return (ts, tw)
            }
            (tileStart, tileWidth) = tiles(upTo: gatherTileMax)
            fillChannelGroup = g.height * g.width >= 1024 ? 8 : 1
        }

        /// Copy index (kx·stride + py) of tap t.
        func copy(ofTap t: Int) -> Int { (t % 3) * stride + (t / 3) % stride }

        /// Fills the copies in `used` (bit per copy) for one image [channels, h, w]; entries
        /// outside the image are zero from the buffer's creation and never written.
        func fill(_ src: UnsafePointer<Float>, into dst: UnsafeMutablePointer<Float>, channels: Int, height h: Int,
                  width w: Int, used: Int) {
            let s = stride, ow = width
            if s == 1 {
                // Copy kx holds the channel's whole plane shifted by one row and kx − 1 columns:
                // one flat run per copy (rows 0 and OH + 1 stay zero), the columns that fall
                // outside the image masked to zero (a per-row loop cost as much as the tiles).
                let n = h * w, cs = copyStride
                if w % 16 == 0 {
                    stride1Fill(src, into: dst, channels: channels, height: h, width: w, used: used)
                    return
                }
                edgeMask0.withUnsafeBufferPointer { m0 in
                edgeMask2.withUnsafeBufferPointer { m2 in
                    for c in 0..<channels {
                        let sc = src + c * n, dc = dst + c * channelStride + ow
                        if used & 2 != 0 { (dc + cs).update(from: sc, count: n) }
                        if used & 1 != 0 { shiftedPlane(sc, dc, n, w, kx: 0, m0.baseAddress!) }
                        if used & 4 != 0 { shiftedPlane(sc, dc + 2 * cs, n, w, kx: 2, m2.baseAddress!) }
                    }
                } }
                return
            }
            if w % 16 == 0 && h % 2 == 0 {
                stride2Fill(src, into: dst, channels: channels, height: h, width: w, used: used)
                return
            }
            for c in 0..<channels {
                let sc = src + c * h * w, dc = dst + c * channelStride
                for y in 0..<h {
                    // Stride 2. Input row y is row r of the copies with parity py (y = s·r + py − 1).
                    let py = (y + 1) % s, r = (y + 1) / s, sr = sc + y * w
                    let d0 = dc + py * copyStride + r * ow, d1 = d0 + s * copyStride, d2 = d1 + s * copyStride
                    let use0 = used & (1 << py) != 0, use1 = used & (1 << (s + py)) != 0
                    let use2 = used & (1 << (2 * s + py)) != 0
                    // kx = 1 reads the even columns 2·ox, kx = 2 the odd ones 2·ox + 1, kx = 0
                    // the odd ones shifted by one (2·ox − 1).
                    let raw = UnsafeRawPointer(sr)
                    var ox = 0
                    while 2 * ox + 16 <= w {
                        let v = raw.loadUnaligned(fromByteOffset: 8 * ox, as: SIMD16<Float>.self)
                        if use1 { UnsafeMutableRawPointer(d1 + ox).storeBytes(of: v.evenHalf, as: SIMD8<Float>.self) }
                        if use2 { UnsafeMutableRawPointer(d2 + ox).storeBytes(of: v.oddHalf, as: SIMD8<Float>.self) }
                        // Shifted by one: may spill into column 0 of the next row, restored below.
                        if use0 { UnsafeMutableRawPointer(d0 + ox + 1).storeBytes(of: v.oddHalf, as: SIMD8<Float>.self) }
                        ox += 8
                    }
                    while 2 * ox < w {
                        if use1 { d1[ox] = sr[2 * ox] }
                        if 2 * ox + 1 < w {
                            if use2 { d2[ox] = sr[2 * ox + 1] }
                            if use0 && ox + 1 < ow { d0[ox + 1] = sr[2 * ox + 1] }
                        }
                        ox += 1
                    }
                    if use0 { d0[ow] = 0 }
                }
            }
        }

        /// Stride 1 with W a multiple of 16: per channel and row, each 16-float vector of the
        /// row loaded once (aligned) for copy kx = 1, the copies kx = 0 and 2 from loads one
        /// float off inside the row and, at the row's ends, from that vector moved by one lane
        /// with a zero shifted in (nothing outside the row is read; no masks). Row r of
        /// `fillChannelGroup` channels before row r + 1, as in `stride2Fill` (1.04-1.09x on
        /// 16->16 32x32's forward).
        @inline(__always)
        private func stride1Fill(_ src: UnsafePointer<Float>, into dst: UnsafeMutablePointer<Float>, channels: Int,
                                 height h: Int, width w: Int, used: Int) {
            typealias V = SIMD16<Float>
            let cs = copyStride, n = h &* w
            let use0 = used & 1 != 0, use1 = used & 2 != 0, use2 = used & 4 != 0
            let group = fillChannelGroup
            var c0 = 0
            while c0 < channels {
                let c1 = min(c0 &+ group, channels)
                for r in 0..<h {
                    for c in c0..<c1 {
                        let sc = UnsafeRawPointer(src + c &* n)
                        let d = UnsafeMutableRawPointer(dst + c &* channelStride + w)
                        let row = 4 &* r &* w
                        var x = 0
                        while x < w {
                            let at = row &+ 4 &* x
                            let v = sc.loadUnaligned(fromByteOffset: at, as: V.self)
                            if use1 { d.storeBytes(of: v, toByteOffset: 4 &* cs &+ at, as: V.self) }
                            if use0 {
                                var u: V
                                if x == 0 {
                                    u = V(0, v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11], v[12],
                                          v[13], v[14])
                                } else {
                                    u = sc.loadUnaligned(fromByteOffset: at &- 4, as: V.self)
                                }
                                d.storeBytes(of: u, toByteOffset: at, as: V.self)
                            }
                            if use2 {
                                var u: V
                                if x &+ 16 == w {
                                    u = V(v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11], v[12], v[13],
                                          v[14], v[15], 0)
                                } else {
                                    u = sc.loadUnaligned(fromByteOffset: at &+ 4, as: V.self)
                                }
                                d.storeBytes(of: u, toByteOffset: 8 &* cs &+ at, as: V.self)
                            }
                            x &+= 16
                        }
                    }
                }
                c0 = c1
            }
        }

        /// Stride 2 with W a multiple of 16 and H even: input row y = 2i + e goes to row i + e
        /// of the copies with py = 1 − e, split into its even columns (kx = 1), odd columns
        /// (kx = 2) and odd columns one to the right (kx = 0, column 0 zero), 8 outputs per
        /// 16-float load (16 per 32-float load with whole-vector stores when OW is a multiple
        /// of 16: 1.02-1.05x on layer2.0.conv1's weight gradient); no per-row restoring of
        /// spilled floats, and the copy checks made once per row. With `fillChannelGroup` 8
        /// (planes of a page or more) rows are taken in order for 8 channels at a time, row y
        /// of each before row y + 1: reading several pages side by side keeps more lines in
        /// flight from memory than one page after another (layer2.0.conv1's forward 1.22-1.37x,
        /// its weight gradient 1.25-1.31x over rows in order one channel at a time, input not
        /// in cache).
        @inline(__always)
        private func stride2Fill(_ src: UnsafePointer<Float>, into dst: UnsafeMutablePointer<Float>, channels: Int,
                                 height h: Int, width w: Int, used: Int) {
            typealias V = SIMD16<Float>
            let ow = width, cs = copyStride
            // Input row y of channel c: row y / 2 + e of the copies with parity py = 1 − e.
            @inline(__always) func row(_ c: Int, _ y: Int) {
                let e = y & 1, i = y >> 1, py = 1 - e
                let use0 = used & (1 << py) != 0, use1 = used & (1 << (2 + py)) != 0, use2 = used & (1 << (4 + py)) != 0
                if !(use0 || use1 || use2) { return }
                let d0 = UnsafeMutableRawPointer(dst + c &* channelStride + py * cs + e * ow), d1 = d0 + 8 * cs
                let d2 = d1 + 8 * cs
                let sr = UnsafeRawPointer(src + (c &* h &+ y) &* w), o = 4 &* i &* ow
                var ox = 0
                if ow % 16 == 0 {
                    // 16 outputs per copy from two 16-float loads: whole-vector stores.
                    while ox < ow {
                        let v = sr.loadUnaligned(fromByteOffset: 8 &* ox, as: SIMD32<Float>.self)
                        let at = o &+ 4 &* ox
                        if use1 { d1.storeBytes(of: v.evenHalf, toByteOffset: at, as: V.self) }
                        if use2 { d2.storeBytes(of: v.oddHalf, toByteOffset: at, as: V.self) }
                        if use0 {
                            var u: V
                            if ox == 0 {
                                let q = v.oddHalf
                                u = V(0, q[0], q[1], q[2], q[3], q[4], q[5], q[6], q[7], q[8], q[9], q[10], q[11], q[12],
                                      q[13], q[14])
                            } else {
                                u = sr.loadUnaligned(fromByteOffset: 8 &* ox &- 4, as: SIMD32<Float>.self).evenHalf
                            }
                            d0.storeBytes(of: u, toByteOffset: at, as: V.self)
                        }
                        ox &+= 16
                    }
                    return
                }
                while ox < ow {
                    let v = sr.loadUnaligned(fromByteOffset: 8 &* ox, as: V.self)
                    let at = o &+ 4 &* ox
                    if use1 { d1.storeBytes(of: v.evenHalf, toByteOffset: at, as: V8.self) }
                    if use2 { d2.storeBytes(of: v.oddHalf, toByteOffset: at, as: V8.self) }
                    if use0 {
                        // x[2·ox − 1]: the odd columns moved up one lane, the row's first zero.
                        var u: V8
                        if ox == 0 {
                            let odd = v.oddHalf
                            u = V8(0, odd[0], odd[1], odd[2], odd[3], odd[4], odd[5], odd[6])
                        } else {
                            u = sr.loadUnaligned(fromByteOffset: 8 &* ox &- 4, as: V.self).evenHalf
                        }
                        d0.storeBytes(of: u, toByteOffset: at, as: V8.self)
                    }
                    ox &+= 8
                }
            }
            let group = fillChannelGroup
            if group == 1 {
                // One channel at a time, its even rows, then its odd ones (1.06-1.11x over rows
                // in order on 32->64 16x16, 1.13-1.20x over 8 channels side by side).
                for c in 0..<channels {
                    for e in 0..<2 { for i in 0..<h / 2 { row(c, 2 &* i &+ e) } }
                }
                return
            }
            var c0 = 0
            while c0 < channels {
                let c1 = min(c0 &+ group, channels)
                for y in 0..<h { for c in c0..<c1 { row(c, y) } }
                c0 = c1
            }
        }
    }

    /// Stride-2 input gradient: tiles of 64, 32, 16 or 8 positions over the parity planes
    /// of the output-gradient grid: where each starts and which plane (list row) it uses.
    struct Tiles {
        var start: [Int] = [], width: [Int] = [], phase: [Int] = []

        /// Per tile three Ints: start, width, phase (read through a pointer in the kernels'
        /// loops: array reads inside the parallel closures cost retains of shared buffers).
        var packed: [Int] {
            var p: [Int] = []
            p.reserveCapacity(3 * start.count)
            for i in 0..<start.count { p += [start[i], width[i], phase[i]] }
            return p
        }

        /// Tiles over positions lo..<lo + count (count whole vectors) for parity plane `phase`.
        mutating func add(lo: Int, count: Int, phase ph: Int) {
            var t = 0
            while t < count {
                let left = count - t
                let w = left >= 64 ? 64 : left >= 32 ? 32 : left >= 16 ? 16 : 8
                start.append(lo + t); width.append(w); phase.append(ph)
                t += w
            }
        }
    }

    /// Offsets and weight order of one weight structure, all in floats from a tile's base.
    struct Plan {
        let rowStart: [Int32], channel: [Int32], tap: [UInt8], tapStart: [Int32]
        /// Forward and weight gradient: filter f's taps are fTaps[f]..<fTaps[f + 1] of
        /// `PatternWeights.value`, tap i reading the shifted input copies at sOffset[i];
        /// `usedCopies` has a bit per copy some tap reads.
        let fTaps: [Int32], sOffset: [Int32], usedCopies: Int
        /// Input gradient at stride 1, a forward pass over the output gradient's shifted
        /// copies with the kernels transposed and mirrored (tap t read as 8 − t): input
        /// channel c's taps are bTaps[c]..<bTaps[c + 1], reading at tOffset[i];
        /// `tUsedCopies` as above.
        let tOffset: [Int32], tUsedCopies: Int
        /// Forward and weight gradient of a 64-position plane with 4-tap kernels: kernels grouped
        /// by (input channel, pattern); group g's four taps read at cpOffset[4g..<4g + 4], its
        /// kernels are cpStart[g]..<cpStart[g + 1], kernel j of filter cpFilter[j] with the
        /// values (and partial sums) of its taps at cpSlot[j]..<cpSlot[j] + 4. cpStart is [0]
        /// and the rest empty when not used.
        let cpOffset: [Int32], cpStart: [Int32], cpFilter: [Int32], cpSlot: [Int32]
        /// The input gradient at stride 1 of the same planes by (filter, pattern) group: group g's
        /// four taps of the output gradient's copies (mirrored) at tcpOffset[4g..<4g + 4], its
        /// kernels tcpStart[g]..<tcpStart[g + 1] writing input channel tcpChannel[j] with the
        /// values at tcpSlot[j]..<tcpSlot[j] + 4.
        let tcpOffset: [Int32], tcpStart: [Int32], tcpChannel: [Int32], tcpSlot: [Int32]
        /// Forward with per-pattern code (every kernel keeps 4 taps): filter f's groups
        /// fGroups[f]..<fGroups[f + 1], group g one pattern id over kernels
        /// groupStart[g]..<groupStart[g + 1], kernel k's input plane at kernelBase[k].
        let fourTap: Bool
        let fGroups: [Int32], groupPattern: [UInt8], groupStart: [Int32], kernelBase: [Int32]
        /// Input gradient, rows = (input channel, parity plane): row r's taps are
        /// bTaps[r]..<bTaps[r + 1], with the weight value[bValueIndex[i]], at stride 2
        /// reading the gradient grid at bOffset[i].
        let bTaps: [Int32], bOffset: [Int32], bValueIndex: [Int32]
        /// Input gradient with per-pattern code (stride 1, 4-tap kernels): per input channel
        /// its groups, as for the forward, kernels reading the shifted output-gradient copies
        /// at bKernelBase[k], weights value[bGroupValueIndex[4k..<4k + 4]].
        let bGroups: [Int32], bGroupPattern: [UInt8], bGroupStart: [Int32], bKernelBase: [Int32]
        let bGroupValueIndex: [Int32]
        /// Stride-2 input gradient by source (`bySource`): per input channel c and shift class
        /// k = u + 2v (the output gradient read at (i + u, j + v)) the kernels j in
        /// srcStart[4c + k]..<srcStart[4c + k + 1] with the weights of the class's taps
        /// (`shiftClassTaps`) value[srcValueIndex[4j..<4j + 4]] (−1: pruned, weight 0). Kernel j
        /// reads at srcRead[j] (v = 0: the output gradient, filter·OH·OW + u·OW; v = 1: the
        /// kx = 2 copy of `dyShifted`) and for the last 64 positions at srcTail[j] (v = 0: the
        /// tail buffer, filter·tailStride + u·OW; v = 1: the copy, as srcRead).
        let srcStart: [Int32], srcValueIndex: [Int32], srcRead: [Int32], srcTail: [Int32]
        /// Weight gradient at stride 1 with OW = 16 or 32 (`verticalPairs`): filter f's taps as
        /// pairs pairStart[f]..<pairStart[f + 1] of one kernel's vertically adjacent taps (ky,
        /// kx), (ky + 1, kx) — the same copy OW floats apart, read once for both — reading at
        /// pairOffset[j], their partial sums at slots pairSlot[2j], pairSlot[2j + 1]; the other
        /// taps singleStart[f]..<singleStart[f + 1] at singleOffset[j], slot singleSlot[j].
        let pairStart: [Int32], pairOffset: [Int32], pairSlot: [Int32]
        let singleStart: [Int32], singleOffset: [Int32], singleSlot: [Int32]

        func matches(_ pw: PatternWeights) -> Bool {
            pw.rowStart == rowStart && pw.channel == channel && pw.tap == tap && pw.tapStart == tapStart
        }
    }

    /// Runs 4-tap layers on the generated per-pattern loops (`patternGroupTile8`) rather
    /// than the generic per-tap tiles; the results are the same. Off by default: on the
    /// Zen 5 machine of this project the per-pattern loops measured about 20% slower on
    /// ResNet-32 at 8x (`clicktrain bench --sparse --per-layer` prints both), since a
    /// filter's kernels fall into groups of one or two per pattern and each group costs a
    /// dispatch and a pass over the accumulators.
    public var usePatternCode = false

    /// Weight gradient of 64-position planes (8x8 outputs, AVX-512 builds) with 4-tap
    /// kernels by (input channel, pattern) group: the group's four input taps held in
    /// registers while its kernels' output gradients stream past (`weightGradGrouped`).
    /// Measured against the per-tap tiles with one kernel object alternating the two call by
    /// call: 1.22-1.24x on a 64-channel 8x8 layer at 11% kept, 1.16x on 32->64 16x16 stride 2.
    /// Runs only where the plane weight gradient does not (`planeWeightGradient` off or
    /// `smallPlaneImagesPerPass` ≤ 1), which measured 1.12-1.21x faster on these planes.
    public var groupedWeightGradient = true

    /// The forward of the same layers by the same groups (`forwardGrouped`): per kernel its
    /// filter's 64 outputs updated in place with 16 register multiply-adds. Measured the same
    /// way: 1.22-1.24x on the 64-channel 8x8 layer, 1.17x on the 32->64 stride-2 one.
    public var groupedForward = true

    /// Stride-2 input gradient with OW in {8, 16, 32, 64} and OH·OW a multiple of 64
    /// (`bySource`): per 64 positions and input channel, its four parity planes held in
    /// registers and interleaved straight into dx, each kernel reading its filter's output
    /// gradient once per shift class for all its taps in the class (`stride2InputGradient`).
    /// Off, the planes are gathered per plane and tap into a buffer and interleaved after
    /// (`interleavePlanes`). Measured with one kernel object alternating both call by call
    /// (batch 128, corner patterns, 15% kept): 1.21x on 16->32 32x32, 1.30-1.36x on 32->64
    /// 16x16.
    public var fusedStride2InputGradient = true

    /// Outputs of this many bytes or more — the forward's, and the input gradient of the
    /// stride-1 gather and of the stride-2 path by source — are written with non-temporal
    /// stores (`streamStore`, AVX-512 x86 builds; not the 8x8 grouped paths): whole 64-byte
    /// lines this call does not read back, so the stores skip reading each line first and do
    /// not displace the input being read. 0 streams always, `Int.max` never. Measured with one
    /// kernel object alternating both call by call (batch 128, with and without 8 MB written
    /// between calls): stride-2 input gradient 1.13-1.19x with 8 MB (layer2.0.conv1),
    /// 0.99-1.01x with 4 MB (32->64 16x16), 0.93-1.05x with 2 MB; forward 1.05-1.12x on
    /// layer2.0.conv1 (4 MiB out), 1.05-1.08x on 16->16 32x32 (8 MiB), 1.04x on 32->32 16x16
    /// (4 MiB), none at 2 MiB; stride-1 input gradient 1.10x (8 MiB), 1.07x (4 MiB). A whole
    /// ResNet-32 training step is unchanged by it (0.995-0.999x: its batch norm then reads the
    /// output from memory); inference with batch norm folded, where the next convolution reads
    /// the output straight away, lost 1-4%, so `Conv2d.forwardFolding` passes
    /// `streamOutput: false`.
    public var streamingMinBytes = 4 << 20

    /// Whether an output of `floats` floats is streamed (`streamingMinBytes`).
    func streams(_ floats: Int) -> Bool { hasStreamingStores && 4 * floats >= streamingMinBytes }

    /// Whether the stride-2 input gradient can run by source (`fusedStride2InputGradient`).
    var bySource: Bool {
        let ow = geometry.outWidth
        return dyShifted != nil && ow >= 8 && 64 % ow == 0 && (geometry.outHeight * ow) % 64 == 0
    }

    /// The stride-1 input gradient of the same 64-position planes by (filter, pattern) group
    /// (`forwardGrouped` over the output gradient's copies with the kernels mirrored).
    /// Measured the same way: 1.43-1.55x on 64->64 8x8.
    public var groupedInputGradient = true

    /// Stride-1 weight gradient by vertical pairs of taps (`weightPairTile`) when OW is 16 or
    /// 32 and OH·OW a multiple of 128 (AVX-512 builds). Measured the same way: 1.02-1.06x on
    /// 16->16 32x32, 1.06-1.09x on 32->32 16x16.
    public var pairedWeightGradient = true

    /// Weight gradient of planes of a multiple of 32 positions with 4-tap kernels by (input
    /// channel, pattern) group over the whole plane (`weightGradPlane`): up to six
    /// kernels' tap sums stay in registers while the group's four input taps and the
    /// kernels' output gradients stream past, 16 positions at a time; the partial sums are
    /// written once per kernel and image instead of once per tap and tile. Takes precedence
    /// over `pairedWeightGradient`. Measured with one kernel object alternating it with the
    /// previous path call by call (batch 128, corner patterns, 16% kept): 1.13-1.20x on
    /// 16->32 32x32 stride 2 (layer2.0.conv1), 1.07-1.11x on 16->16 32x32, 1.11-1.17x on
    /// 32->32 16x16; on 64-position planes 0.90-0.97x (`weightGradGrouped` stays there).
    /// One pass for groups of up to six kernels (was four, then two, then one): 1.05-1.06x on
    /// 16->32 32x32, 1.02-1.08x on the stride-1 planes. 64-position planes run it over
    /// `smallPlaneImagesPerPass` images per pass.
    public var planeWeightGradient = true

    /// On 64-position planes (8x8 outputs) the plane weight gradient takes this many images
    /// per pass (their copies side by side, each group's sums kept in registers across them:
    /// 16 steps of 16 positions at 4 images, as on a 16x16 plane); 1 leaves these planes to
    /// `weightGradGrouped`. Measured with one kernel object alternating it with
    /// `weightGradGrouped` call by call (batch 128, 11% kept): 2 images 1.11x, 4 images
    /// 1.12-1.20x, 8 images 1.08-1.09x on 64->64 8x8; 1.11x, 1.19-1.21x, 1.06-1.11x on
    /// 32->64 16x16 stride 2.
    public var smallPlaneImagesPerPass = 4

    var verticalPairs: Bool {
        let g = geometry
        return g.stride == 1 && (g.outWidth == 16 || g.outWidth == 32) && (g.outHeight * g.outWidth) % 128 == 0
            && weightLanes == 16
    }

    /// Floats per filter in the by-source input gradient's tail buffer: the plane's last 64
    /// positions, then zeros (row OH reads zero, and nothing past the output gradient is read).
    var tailStride: Int { (64 + geometry.outWidth + 16 + 15) / 16 * 16 }

    /// The taps of the stride-2 input gradient's shift classes (u, v) = (0, 0), (1, 0),
    /// (0, 1), (1, 1) (index u + 2v) in the order of the kernel's weight slots: slot j of class
    /// (0, 0) writes plane j; (1, 0) planes (1, 0), (1, 1); (0, 1) planes (0, 1), (1, 1);
    /// (1, 1) plane (1, 1).
    static let shiftClassTaps: [[Int]] = [[4, 5, 7, 8], [1, 2], [3, 6], [0]]

    /// Whether the last weight structure has the generated per-pattern path (4-tap kernels).
    public var hasPatternPath: Bool { plan?.fourTap ?? false }

    /// Index of a 4-tap pattern (bit t set for kept tap t) in `PatternKernelSource`'s order.
    static let fourTapID: [UInt16: UInt8] = {
        var ids: [UInt16: UInt8] = [:]
        var id = 0
        for a in 0..<9 { for b in (a + 1)..<9 { for c in (b + 1)..<9 { for d in (c + 1)..<9 {
            ids[UInt16(1 << a | 1 << b | 1 << c | 1 << d)] = UInt8(id)
            id += 1
        } } } }
        return ids
    }()

    public static func supports(_ g: ConvGeometry) -> Bool {
        g.kernelSize == 3 && g.padding == 1 && (g.stride == 1 || g.stride == 2)
    }

    /// The geometry these kernels run a convolution as: itself for 3x3 with padding 1, the
    /// equivalent 3x3 (padding 1, centre tap only) for 1x1 with padding 0; nil otherwise.
    /// Strides 1 and 2.
    public static func embeddedGeometry(_ g: ConvGeometry) -> ConvGeometry? {
        if supports(g) { return g }
        guard g.kernelSize == 1 && g.padding == 0 && (g.stride == 1 || g.stride == 2) else { return nil }
        let e = ConvGeometry(batch: g.batch, inChannels: g.inChannels, height: g.height, width: g.width,
                             outChannels: g.outChannels, kernelSize: 3, stride: g.stride, padding: 1)
        return e.outputShape == g.outputShape ? e : nil
    }

    public init(_ g: ConvGeometry) {
        precondition(PatternConvKernel.supports(g), "pattern conv needs 3x3, padding 1, stride 1 or 2: \(g)")
        geometry = g
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

    /// Parity plane of the input gradient a tap writes (0 for stride 1). Even planes
    /// (`dyShifted`): plane 2a + b holds (2i + a, 2j + b), which tap (ky, kx) reaches when
    /// ky ≡ a + 1 and kx ≡ b + 1 (mod 2); otherwise plane 2py + px holds (2i + py − 1, 2j + px − 1).
    func phase(ofTap t: Int) -> Int {
        if phases == 1 { return 0 }
        let (ky, kx) = (t / 3, t % 3)
        return dyShifted != nil ? ((ky + 1) & 1) * 2 + ((kx + 1) & 1) : (ky & 1) * 2 + (kx & 1)
    }

    func makePlan(_ pw: PatternWeights) -> Plan {
        let g = geometry
        precondition(pw.outChannels == g.outChannels && pw.inChannels == g.inChannels, "pattern conv: weight shape")
        let gs = Int32(gridStride)
        var fTaps: [Int32] = [0], sOffset = [Int32]()
        sOffset.reserveCapacity(pw.tap.count)
        var usedCopies = 0
        let cs = Int32(shifted.channelStride)
        var bitsOf = [UInt16](repeating: 0, count: pw.channel.count)
        for f in 0..<g.outChannels {
            for e in Int(pw.rowStart[f])..<Int(pw.rowStart[f + 1]) {
                for i in Int(pw.tapStart[e])..<Int(pw.tapStart[e + 1]) {
                    sOffset.append(pw.channel[e] * cs + Int32(shifted.tapOffsets[Int(pw.tap[i])]))
                    usedCopies |= 1 << shifted.copy(ofTap: Int(pw.tap[i]))
                    bitsOf[e] |= 1 << UInt16(pw.tap[i])
                }
            }
            fTaps.append(pw.tapStart[Int(pw.rowStart[f + 1])])
        }
        let fourTap = bitsOf.allSatisfy { $0.nonzeroBitCount == 4 }
        var cpOffset: [Int32] = [], cpStart: [Int32] = [0], cpFilter: [Int32] = [], cpSlot: [Int32] = []
        // For 64-position planes (the grouped forward, weight and stride-1 input gradients)
        // and for the weight gradient of planes of a multiple of 32 positions over the whole
        // plane (`weightGradPlane`). On 16x16 and 32x32 planes run chunk by chunk, the
        // 64-position loop measured 7-12% slower than the per-tap tiles (fewer kernels per
        // group share the inputs held in registers, and 128-position tiles update partial sums
        // half as often); the plane loop keeps the sums in registers over the whole plane.
        if fourTap && weightLanes == 16 && shifted.positions % 32 == 0 {
            var groups: [UInt32: [(Int32, Int32)]] = [:]
            for f in 0..<g.outChannels {
                for e in Int(pw.rowStart[f])..<Int(pw.rowStart[f + 1]) {
                    groups[UInt32(pw.channel[e]) << 16 | UInt32(bitsOf[e]), default: []].append((Int32(f), pw.tapStart[e]))
                }
            }
            for key in groups.keys.sorted() {
                let ch = Int32(key >> 16), bits = UInt16(key & 0xFFFF)
                for t in 0..<9 where bits & (1 << t) != 0 { cpOffset.append(ch * cs + Int32(shifted.tapOffsets[t])) }
                for (f, slot) in groups[key]! { cpFilter.append(f); cpSlot.append(slot) }
                cpStart.append(Int32(cpFilter.count))
            }
        }
        // The input gradient of the same layers at stride 1 by (filter, pattern) group: the
        // group's four output-gradient taps (mirrored, 8 − t, listed in the kernel's value
        // order) in registers, its kernels' input channels updated in place (`forwardGrouped`).
        var tcpOffset: [Int32] = [], tcpStart: [Int32] = [0], tcpChannel: [Int32] = [], tcpSlot: [Int32] = []
        if cpStart.count > 1 && g.stride == 1 && shifted.positions == 64 {
            var groups: [UInt32: [(Int32, Int32)]] = [:]
            for f in 0..<g.outChannels {
                for e in Int(pw.rowStart[f])..<Int(pw.rowStart[f + 1]) {
                    groups[UInt32(f) << 16 | UInt32(bitsOf[e]), default: []].append((pw.channel[e], pw.tapStart[e]))
                }
            }
            for key in groups.keys.sorted() {
                let f = Int32(key >> 16), bits = UInt16(key & 0xFFFF)
                for t in 0..<9 where bits & (1 << t) != 0 { tcpOffset.append(f * cs + Int32(shifted.tapOffsets[8 - t])) }
                for (ci, slot) in groups[key]! { tcpChannel.append(ci); tcpSlot.append(slot) }
                tcpStart.append(Int32(tcpChannel.count))
            }
        }
        // Groups of consecutive kernels with one pattern (PatternWeights sorts each filter's
        // kernels by pattern).
        var fGroups: [Int32] = [0], gPat: [UInt8] = [], gStart: [Int32] = [], kBase: [Int32] = []
        if fourTap {
            for f in 0..<g.outChannels {
                var last: UInt16 = 0
                for e in Int(pw.rowStart[f])..<Int(pw.rowStart[f + 1]) {
                    if bitsOf[e] != last || e == Int(pw.rowStart[f]) {
                        gPat.append(PatternConvKernel.fourTapID[bitsOf[e]]!)
                        gStart.append(Int32(e))
                        last = bitsOf[e]
                    }
                    kBase.append(pw.channel[e] * cs)
                }
                fGroups.append(Int32(gPat.count))
            }
            gStart.append(Int32(pw.channel.count))
        }
        // Input-gradient lists: per input channel and parity plane, the taps in that plane.
        let byC = pw.byInputChannel()
        var bTaps: [Int32] = [0], bOffset: [Int32] = [], vi: [Int32] = [], tOffset: [Int32] = []
        var tUsedCopies = 0
        for c in 0..<g.inChannels {
            for ph in 0..<phases {
                for e in Int(byC.rowStart[c])..<Int(byC.rowStart[c + 1]) {
                    for i in Int(byC.tapStart[e])..<Int(byC.tapStart[e + 1]) where phase(ofTap: Int(byC.tap[i])) == ph {
                        let t = Int(byC.tap[i])
                        if phases == 1 {
                            tOffset.append(byC.filter[e] * cs + Int32(shifted.tapOffsets[8 - t]))
                            tUsedCopies |= 1 << shifted.copy(ofTap: 8 - t)
                        } else if let ds = dyShifted {
                            // Plane (a, b) reads the output gradient at (i + u, j + v),
                            // u = (a + 1 − ky) / 2: the stride-1 tap (1 + u, 1 + v) of its copies.
                            let (ky, kx) = (t / 3, t % 3), ph = phase(ofTap: t)
                            let u = (ph / 2 + 1 - ky) / 2, v = (ph % 2 + 1 - kx) / 2
                            let st = (1 + u) * 3 + 1 + v
                            tOffset.append(byC.filter[e] * Int32(ds.channelStride) + Int32(ds.tapOffsets[st]))
                            tUsedCopies |= 1 << ds.copy(ofTap: st)
                        } else {
                            bOffset.append(byC.filter[e] * gs - Int32(tapOffsets[t]))
                        }
                        vi.append(byC.valueIndex[i])
                    }
                }
                bTaps.append(Int32(vi.count))
            }
        }
        // Stride-2 input gradient by source: per input channel and shift class (u, v) of the
        // output gradient, the kernels with a tap in the class, each read once for all of the
        // class's taps (4 weight slots per kernel, −1 where the tap is pruned).
        var srcStart: [Int32] = [0], srcValue: [Int32] = [], srcRead: [Int32] = [], srcTail: [Int32] = []
        if let ds = dyShifted, bySource {
            let size = Int32(g.outHeight * g.outWidth)
            for ci in 0..<g.inChannels {
                for cls in 0..<4 {
                    let (u, v) = (cls & 1, cls >> 1)
                    let slots = PatternConvKernel.shiftClassTaps[cls]
                    for e in Int(byC.rowStart[ci])..<Int(byC.rowStart[ci + 1]) {
                        var idx: [Int32] = [-1, -1, -1, -1]
                        for i in Int(byC.tapStart[e])..<Int(byC.tapStart[e + 1]) {
                            if let j = slots.firstIndex(of: Int(byC.tap[i])) { idx[j] = byC.valueIndex[i] }
                        }
                        if idx.allSatisfy({ $0 < 0 }) { continue }
                        srcValue += idx
                        let f = byC.filter[e], d = Int32(u * g.outWidth + v)
                        if v == 1 {
                            // Column j + 1: the kx = 2 copy (zero at column OW − 1; rows OH and
                            // past the plane zero too), tail or not.
                            let at = f * Int32(ds.channelStride) + Int32(ds.tapOffsets[(1 + u) * 3 + 2])
                            srcRead.append(at); srcTail.append(at)
                        } else {
                            srcRead.append(f * size + d); srcTail.append(f * Int32(tailStride) + d)
                        }
                    }
                    srcStart.append(Int32(srcRead.count))
                }
            }
        }
        // Weight-gradient pairs of vertically adjacent taps (stride 1, OW = 16 or 32).
        var pairStart: [Int32] = [0], pairOffset: [Int32] = [], pairSlot: [Int32] = []
        var singleStart: [Int32] = [0], singleOffset: [Int32] = [], singleSlot: [Int32] = []
        if verticalPairs {
            for f in 0..<g.outChannels {
                for e in Int(pw.rowStart[f])..<Int(pw.rowStart[f + 1]) {
                    var at = [Int](repeating: -1, count: 9)  // tap -> index into value
                    for i in Int(pw.tapStart[e])..<Int(pw.tapStart[e + 1]) { at[Int(pw.tap[i])] = i }
                    let base = pw.channel[e] * cs
                    for kx in 0..<3 {
                        var ky = 0
                        while ky < 3 {
                            let t = ky * 3 + kx
                            if at[t] < 0 { ky += 1; continue }
                            if ky < 2 && at[t + 3] >= 0 {
                                pairOffset.append(base + Int32(shifted.tapOffsets[t]))
                                pairSlot += [Int32(at[t]), Int32(at[t + 3])]
                                ky += 2
                            } else {
                                singleOffset.append(base + Int32(shifted.tapOffsets[t]))
                                singleSlot.append(Int32(at[t]))
                                ky += 1
                            }
                        }
                    }
                }
                pairStart.append(Int32(pairSlot.count / 2))
                singleStart.append(Int32(singleSlot.count))
            }
        }
        // Per-pattern input-gradient groups (stride 1): each channel's kernels sorted by
        // pattern; weights in `bValueIndex` order, 4 per kernel.
        var bGroups: [Int32] = [0], bgPat: [UInt8] = [], bgStart: [Int32] = [], bkBase: [Int32] = []
        var bvi: [Int32] = []
        if fourTap && phases == 1 {
            bvi = []
            var k = 0
            for c in 0..<g.inChannels {
                var entries = Array(Int(byC.rowStart[c])..<Int(byC.rowStart[c + 1]))
                let bits = entries.map { e in
                    (Int(byC.tapStart[e])..<Int(byC.tapStart[e + 1])).reduce(UInt16(0)) { $0 | 1 << UInt16(byC.tap[$1]) }
                }
                let order = entries.indices.sorted { bits[$0] != bits[$1] ? bits[$0] < bits[$1] : $0 < $1 }
                entries = order.map { entries[$0] }
                var last: UInt16 = 0
                for (j, oi) in order.enumerated() {
                    let e = entries[j]
                    if j == 0 || bits[oi] != last {
                        bgPat.append(PatternConvKernel.fourTapID[bits[oi]]!)
                        bgStart.append(Int32(k))
                        last = bits[oi]
                    }
                    bkBase.append(byC.filter[e] * cs)
                    for i in Int(byC.tapStart[e])..<Int(byC.tapStart[e + 1]) { bvi.append(byC.valueIndex[i]) }
                    k += 1
                }
                bGroups.append(Int32(bgPat.count))
            }
            bgStart.append(Int32(k))
        }
        return Plan(rowStart: pw.rowStart, channel: pw.channel, tap: pw.tap, tapStart: pw.tapStart,
                    fTaps: fTaps, sOffset: sOffset, usedCopies: usedCopies, tOffset: tOffset, tUsedCopies: tUsedCopies,
                    cpOffset: cpOffset, cpStart: cpStart, cpFilter: cpFilter, cpSlot: cpSlot,
                    tcpOffset: tcpOffset, tcpStart: tcpStart, tcpChannel: tcpChannel, tcpSlot: tcpSlot,
                    fourTap: fourTap, fGroups: fGroups, groupPattern: gPat,
                    groupStart: gStart, kernelBase: kBase, bTaps: bTaps, bOffset: bOffset,
                    bValueIndex: vi, bGroups: bGroups, bGroupPattern: bgPat, bGroupStart: bgStart,
                    bKernelBase: bkBase, bGroupValueIndex: bvi, srcStart: srcStart, srcValueIndex: srcValue, srcRead: srcRead, srcTail: srcTail,
                    pairStart: pairStart, pairOffset: pairOffset, pairSlot: pairSlot, singleStart: singleStart,
                    singleOffset: singleOffset, singleSlot: singleSlot)
    }

    func planFor(_ pw: PatternWeights) -> Plan {
        if let p = plan, p.matches(pw) { return p }
        let p = makePlan(pw)
        plan = p
        return p
    }

    /// Per-chunk shifted-copy buffers for max(C, K) channels.
    private func shiftedChunkBuffers() -> [UnsafeMutablePointer<Float>] {
        if shiftedBuffers.isEmpty {
            let channels = max(geometry.inChannels, geometry.outChannels)
            shiftedBuffers = (0..<chunks).map { _ in Tensor(shape: [channels * shifted.channelStride + 16]) }
        }
        return shiftedBuffers.map(\.data)
    }

    /// `output = conv(input, weights) + bias`, plus `residual` when given (a ResNet block's
    /// shortcut, same shape as the output), then max(0, ·) when `relu` — both fused into
    /// the store; input [N, C, H, W], output [N, K, OH, OW]. `streamOutput` false keeps a
    /// large output in cache (`streamingMinBytes`): for a caller that reads it at once.
    public func forward(input: Tensor, weights pw: PatternWeights, bias: Tensor?, output: Tensor, relu: Bool = false,
                        residual: Tensor? = nil, streamOutput: Bool = true) {
        let g = geometry
        precondition(input.shape == g.inputShape && output.shape == g.outputShape, "pattern conv forward: shapes")
        precondition(residual == nil || residual!.shape == g.outputShape, "pattern conv forward: residual shape")
        precondition(pw.outChannels == g.outChannels && pw.inChannels == g.inChannels, "pattern conv: weight shape")
        let p = planFor(pw)
        let n = g.batch, c = g.inChannels, k = g.outChannels, h = g.height, w = g.width
        let sh = shifted, outSize = sh.positions
        let xin = input.data, yout = output.data, res = residual?.data, bufs = shiftedChunkBuffers()
        let scr = scratch.map(\.data)
        let chunkCount = chunks, used = p.usedCopies
        let biasValues = (0..<k).map { bias?[$0] ?? 0 }
        let usePatterns = usePatternCode && p.fourTap
        let grouped = groupedForward && p.cpStart.count > 1 && sh.positions == 64 && !usePatterns, groups = p.cpStart.count - 1
        let streamY = streamOutput && !grouped && !usePatterns && outSize % 16 == 0 && streams(g.outputShape.reduce(1, *))
        p.cpOffset.withUnsafeBufferPointer { cpo in
        p.cpStart.withUnsafeBufferPointer { cps in
        p.cpFilter.withUnsafeBufferPointer { cpf in
        p.cpSlot.withUnsafeBufferPointer { cpk in
        p.fTaps.withUnsafeBufferPointer { ft in
        p.sOffset.withUnsafeBufferPointer { off in
        p.fGroups.withUnsafeBufferPointer { fg in
        p.groupPattern.withUnsafeBufferPointer { gp in
        p.groupStart.withUnsafeBufferPointer { gs in
        p.kernelBase.withUnsafeBufferPointer { kb in
        sh.tapBytes.withUnsafeBufferPointer { tb in
        pw.value.withUnsafeBufferPointer { vs in
        biasValues.withUnsafeBufferPointer { bv in
            let rows = GatherRows(taps: ft.baseAddress!, offset: off.baseAddress ?? ft.baseAddress!,
                                  weight: vs.baseAddress ?? bv.baseAddress!, initial: bv.baseAddress!,
                                  groups: fg.baseAddress, groupPattern: gp.baseAddress, groupStart: gs.baseAddress,
                                  kernelBase: kb.baseAddress, groupWeight: vs.baseAddress, tapBytes: tb.baseAddress,
                                  usePatterns: usePatterns)
            Threads.parallelFor(chunkCount) { chunk in
                for b in (n * chunk / chunkCount)..<(n * (chunk + 1) / chunkCount) {
                    sh.fill(xin + b * c * h * w, into: bufs[chunk], channels: c, height: h, width: w, used: used)
                    let at = b * k * outSize, y = yout + at
                    guard grouped else {
                        gatherImage(sh, UnsafePointer(bufs[chunk]), rows, count: k, into: y, scratch: scr[chunk],
                                    relu: relu, residual: res.map { UnsafePointer($0 + at) }, stream: streamY)
                        continue
                    }
                    // (Channel, pattern) groups: outputs from the bias, updated in place, then
                    // the residual and ReLU.
                    for f in 0..<k { (y + f * outSize).update(repeating: bv[f], count: outSize) }
                    forwardGrouped(y, UnsafePointer(bufs[chunk]), cpo.baseAddress!, cps.baseAddress!, cpf.baseAddress!,
                                   cpk.baseAddress!, vs.baseAddress!, groups: groups)
                    if let res {
                        addResidual(UnsafePointer(y), UnsafePointer(res + at), into: y, k * outSize, relu: relu)
                    } else if relu {
                        reluInto(UnsafePointer(y), y, k * outSize)
                    }
                }
                if streamY { streamFence() }
            }
        } } } } } } } } } } } } }
    }

    /// Input gradient and the gradient of the kept weights only (`gradValues`, aligned
    /// with `weights.value`), from `gradOutput`; `gradInput` nil skips the input gradient,
    /// `gradValues` nil the weight gradient.
    /// Weight gradient: dw_i = Σ_q dy[q]·x_copies[off_i + q] over the output plane, a tile
    /// of dy in registers against the kept taps' shifted inputs (at stride 1 with 16- or
    /// 32-wide outputs a kernel's vertically adjacent taps share one read). Input gradient at
    /// stride 1: the forward's gather over the output gradient's shifted copies, kernels
    /// transposed and mirrored; at stride 2 by parity plane of the input (see the type's
    /// documentation).
    public func backward(input: Tensor, weights pw: PatternWeights, gradOutput: Tensor, gradInput: Tensor?,
                         gradValues: UnsafeMutablePointer<Float>?, gradBias: Tensor?) {
        let g = geometry
        precondition(input.shape == g.inputShape && gradOutput.shape == g.outputShape, "pattern conv backward: shapes")
        let p = planFor(pw)
        let n = g.batch, c = g.inChannels, k = g.outChannels, h = g.height, w = g.width
        let oh = g.outHeight, ow = g.outWidth
        let pitch = self.pitch, margin = self.margin
        let nv = pw.value.count
        let chunkCount = chunks
        let gstride = gridStride, sh = shifted, outSize = sh.positions, planeStride = self.planeStride
        let gridded = phases > 1 && gradInput != nil
        // Per chunk, at stride 2: the input gradient's parity planes, and the output gradients
        // of one image as shifted copies (`dyShifted`; not in the input copies' buffer, whose
        // zeros the stride-2 layout keeps) or, for odd sizes, on the plane grid (zero margins
        // and pad columns, never written). Per-tap partial weight gradients of `weightLanes` lanes.
        if backwardBuffers == nil || backwardBuffers!.dw[0].count < max(nv, 1) * weightLanes || (gridded && backwardBuffers!.grid.isEmpty) {
            let gridFloats = dyShifted.map { k * $0.channelStride } ?? k * gstride
            backwardBuffers = (gridded ? (0..<chunkCount).map { _ in Tensor(shape: [gridFloats + 16]) } : [],
                               (0..<chunkCount).map { _ in Tensor(shape: [max(nv, 1) * weightLanes]) },
                               gridded ? (0..<chunkCount).map { _ in Tensor(shape: [max((dyShifted == nil ? c : 1) * planeStride, k * tailStride)]) } : [])
        }
        let bufs = backwardBuffers!
        let xbuf = shiftedChunkBuffers(), scr = scratch.map(\.data)
        let grids = bufs.grid.map(\.data), dwps = bufs.dw.map(\.data), planeBufs = bufs.planes.map(\.data)
        let rp = rows * pitch
        let xin = input.data, dy = gradOutput.data, dx = gradInput?.data
        // Weights in the input gradient's orders.
        let usePatterns = usePatternCode && p.fourTap && phases == 1
        let bySource = fusedStride2InputGradient && self.bySource && gradInput != nil
        let groupedInput = groupedInputGradient && p.tcpStart.count > 1
        // Streamed: dx by source, or the stride-1 gather's full tiles (positions a multiple of 16).
        let streamDX = gradInput != nil && streams(g.inputShape.reduce(1, *))
            && (bySource || (phases == 1 && !groupedInput && !usePatterns && outSize % 16 == 0))
        // The per-tap transposed weights only where a per-tap input-gradient gather runs (the
        // by-source and grouped paths read their own orders or `pw.value`).
        let perTapInput = gradInput != nil && !bySource && !groupedInput
        var bWeight = [Float](repeating: 0, count: perTapInput ? p.bValueIndex.count : 0)
        var gWeight = [Float](repeating: 0, count: usePatterns ? p.bGroupValueIndex.count : 0)
        var sWeight = [Float](repeating: 0, count: bySource ? p.srcValueIndex.count : 0)
        pw.value.withUnsafeBufferPointer { v in
            for i in 0..<sWeight.count where p.srcValueIndex[i] >= 0 { sWeight[i] = v[Int(p.srcValueIndex[i])] }
            for i in 0..<bWeight.count { bWeight[i] = v[Int(p.bValueIndex[i])] }
            for i in 0..<gWeight.count { gWeight[i] = v[Int(p.bGroupValueIndex[i])] }
        }
        let zeros = [Float](repeating: 0, count: c * phases)  // initial values, one per gather row
        let wantWeights = gradValues != nil
        let phases = self.phases
        let tilePacked = inputGradTiles.packed, tileCount = inputGradTiles.start.count
        let wStart = sh.tileStart, wWidth = sh.tileWidth, wCount = wStart.count
        let grouped = groupedWeightGradient && p.cpStart.count > 1 && outSize == 64
        let planeGrouped = planeWeightGradient && p.cpStart.count > 1 && outSize != 64
        let imagesPerPass = smallPlaneImagesPerPass
        let multiImage = wantWeights && planeWeightGradient && imagesPerPass > 1 && p.cpStart.count > 1 && outSize == 64
        let imageFloats = c * sh.channelStride
        if multiImage && (multiImageBuffers.isEmpty || multiImageBuffers[0].count < imagesPerPass * imageFloats + 16) {
            multiImageBuffers = (0..<chunkCount).map { _ in Tensor(shape: [imagesPerPass * imageFloats + 16]) }
        }
        let multiBufs = multiImageBuffers.map(\.data)
        p.cpOffset.withUnsafeBufferPointer { cpo in
        p.cpStart.withUnsafeBufferPointer { cps in
        p.cpFilter.withUnsafeBufferPointer { cpf in
        p.cpSlot.withUnsafeBufferPointer { cpk in
        let (cpo, cps, cpf, cpk) = (cpo.baseAddress, cps.baseAddress!, cpf.baseAddress, cpk.baseAddress)
        p.fTaps.withUnsafeBufferPointer { ft in
        p.sOffset.withUnsafeBufferPointer { soff in
        p.tOffset.withUnsafeBufferPointer { toff in
        p.bTaps.withUnsafeBufferPointer { bt in
        p.bOffset.withUnsafeBufferPointer { boff in
        p.bGroups.withUnsafeBufferPointer { bg in
        p.bGroupPattern.withUnsafeBufferPointer { bgp in
        p.bGroupStart.withUnsafeBufferPointer { bgs in
        p.bKernelBase.withUnsafeBufferPointer { bkb in
        // The per-pattern input-gradient code reads original tap t at the mirrored offset.
        sh.mirroredTapBytes.withUnsafeBufferPointer { mtb in
        zeros.withUnsafeBufferPointer { zeros in
        bWeight.withUnsafeBufferPointer { bw in
        gWeight.withUnsafeBufferPointer { gw in
        tilePacked.withUnsafeBufferPointer { tinfo in
        wStart.withUnsafeBufferPointer { wStart in
        wWidth.withUnsafeBufferPointer { wWidth in
        p.srcStart.withUnsafeBufferPointer { sst in
        let paired = pairedWeightGradient && verticalPairs
        p.tcpOffset.withUnsafeBufferPointer { tco in
        p.tcpStart.withUnsafeBufferPointer { tcs in
        p.tcpChannel.withUnsafeBufferPointer { tcc in
        p.tcpSlot.withUnsafeBufferPointer { tck in
        pw.value.withUnsafeBufferPointer { values in
        p.pairStart.withUnsafeBufferPointer { pst in
        p.pairOffset.withUnsafeBufferPointer { pof in
        p.pairSlot.withUnsafeBufferPointer { psl in
        p.singleStart.withUnsafeBufferPointer { sst1 in
        p.singleOffset.withUnsafeBufferPointer { sof1 in
        p.singleSlot.withUnsafeBufferPointer { ssl in
        let (pst, pof, psl) = (pst.baseAddress!, pof.baseAddress ?? pst.baseAddress!, psl.baseAddress ?? pst.baseAddress!)
        let (sst1, sof1, ssl) = (sst1.baseAddress!, sof1.baseAddress ?? sst1.baseAddress!, ssl.baseAddress ?? sst1.baseAddress!)
        p.srcRead.withUnsafeBufferPointer { srd in
        p.srcTail.withUnsafeBufferPointer { stl in
        sWeight.withUnsafeBufferPointer { swt in
            let tinfo = tinfo.baseAddress!, wStart = wStart.baseAddress!, wWidth = wWidth.baseAddress!
            let ft = ft.baseAddress!, soff = soff.baseAddress!, bt = bt.baseAddress!, boff = boff.baseAddress
            let bw = bw.baseAddress
            // (Empty arrays have no base address; a row with no taps never reads them.)
            let transposed = GatherRows(taps: bt, offset: toff.baseAddress ?? bt, weight: bw ?? zeros.baseAddress!,
                                        initial: zeros.baseAddress!, groups: bg.baseAddress, groupPattern: bgp.baseAddress,
                                        groupStart: bgs.baseAddress, kernelBase: bkb.baseAddress,
                                        groupWeight: gw.baseAddress, tapBytes: mtb.baseAddress, usePatterns: usePatterns)
            Threads.parallelFor(chunkCount) { chunk in
                let xp = xbuf[chunk], dwv = dwps[chunk], tile = scr[chunk]
                dwv.update(repeating: 0, count: max(nv, 1) * weightLanes)
                for b in (n * chunk / chunkCount)..<(n * (chunk + 1) / chunkCount) {
                    // Weight gradient of the kept taps, tile by tile over the output plane.
                    if wantWeights && multiImage {
                        let first = n * chunk / chunkCount, last = n * (chunk + 1) / chunkCount
                        if (b - first) % imagesPerPass == 0 {
                            let nb = min(imagesPerPass, last - b), mb = multiBufs[chunk]
                            for i in 0..<nb {
                                sh.fill(xin + (b + i) * c * h * w, into: mb + i * imageFloats, channels: c, height: h, width: w,
                                        used: p.usedCopies)
                            }
                            weightGradPlane(dwv, UnsafePointer(dy + b * k * outSize), UnsafePointer(mb), cpo!, cps, cpf!, cpk!,
                                            groups: p.cpStart.count - 1, positions: outSize, images: nb,
                                            xImage: 4 * imageFloats, yImage: 4 * k * outSize)
                        }
                    } else if wantWeights && grouped {
                        sh.fill(xin + b * c * h * w, into: xp, channels: c, height: h, width: w, used: p.usedCopies)
                        weightGradGrouped(dwv, UnsafePointer(dy + b * k * outSize), UnsafePointer(xp), cpo!, cps, cpf!, cpk!,
                                          groups: p.cpStart.count - 1)
                    } else if wantWeights && planeGrouped {
                        sh.fill(xin + b * c * h * w, into: xp, channels: c, height: h, width: w, used: p.usedCopies)
                        weightGradPlane(dwv, UnsafePointer(dy + b * k * outSize), UnsafePointer(xp), cpo!, cps, cpf!, cpk!,
                                        groups: p.cpStart.count - 1, positions: outSize)
                    } else if wantWeights && paired {
                        sh.fill(xin + b * c * h * w, into: xp, channels: c, height: h, width: w, used: p.usedCopies)
                        for f in 0..<k {
                            let d = UnsafePointer(dy + (b * k + f) * outSize)
                            var q = 0
                            while q < outSize {
                                weightPairTile(dwv, d + q, UnsafePointer(xp + q), vectorsPerRow: ow / 16, pst[f], pst[f + 1],
                                               pof, psl, sst1[f], sst1[f + 1], sof1, ssl)
                                q += 128
                            }
                        }
                    } else if wantWeights {
                        sh.fill(xin + b * c * h * w, into: xp, channels: c, height: h, width: w, used: p.usedCopies)
                        for f in 0..<k {
                            let i0 = Int(ft[f]), i1 = Int(ft[f + 1])
                            if i0 == i1 { continue }
                            let d = UnsafePointer(dy + (b * k + f) * outSize)
                            for ti in 0..<wCount {
                                let q = wStart[ti], width = wWidth[ti]
                                var src = d + q
                                if q + width > outSize {
                                    // The plane's last partial tile, zero-padded.
                                    tile.update(repeating: 0, count: width)
                                    tile.update(from: src, count: outSize - q)
                                    src = UnsafePointer(tile)
                                }
                                weightTile(width, dwv, src, xp + q, i0, i1, soff)
                            }
                        }
                    }
                    guard let dx else { continue }
                    let dxb = dx + b * c * h * w
                    if phases == 1 {
                        // The output gradient's shifted copies (same plane size at stride 1).
                        sh.fill(dy + b * k * outSize, into: xp, channels: k, height: h, width: w, used: p.tUsedCopies)
                        if groupedInput {
                            dxb.update(repeating: 0, count: c * outSize)
                            forwardGrouped(dxb, UnsafePointer(xp), tco.baseAddress!, tcs.baseAddress!, tcc.baseAddress!,
                                           tck.baseAddress!, values.baseAddress!, groups: p.tcpStart.count - 1)
                            continue
                        }
                        gatherImage(sh, UnsafePointer(xp), transposed, count: c, into: dxb, scratch: tile, relu: false,
                                    residual: nil, stream: streamDX)
                        continue
                    }
                    if let ds = dyShifted {
                        let dyb = dy + b * k * outSize, dyp = grids[chunk]
                        if bySource {
                            // Each filter's last 64 positions before the tail buffer's zeros; the
                            // kx = 2 copy for the v = 1 classes.
                            let tail = planeBufs[chunk], ts = tailStride
                            for f in 0..<k { (tail + f * ts).update(from: dyb + f * outSize + outSize - 64, count: 64) }
                            ds.fill(dyb, into: dyp, channels: k, height: oh, width: ow, used: 1 << ds.copy(ofTap: 5))
                            stride2InputGradient(dxb, UnsafePointer(dyb), UnsafePointer(tail), UnsafePointer(dyp), sst.baseAddress!,
                                                 srd.baseAddress!, stl.baseAddress!, swt.baseAddress!, channels: c,
                                                 rows: oh, width: ow, streaming: streamDX)
                            continue
                        }
                        // Other even sizes: the four parity planes of each input channel as rows
                        // of a stride-1 gather over the output gradient's copies (kx = 1, 2), one
                        // channel at a time, interleaved into dx while they are in L1 (every
                        // channel's planes first, then the interleave: 7-12% slower).
                        let pl = UnsafePointer(planeBufs[chunk])
                        ds.fill(dyb, into: dyp, channels: k, height: oh, width: ow, used: p.tUsedCopies)
                        // Row y = 2i + a of dx: even columns from plane (a, 0), odd from (a, 1).
                        let size = oh * ow
                        for ci in 0..<c {
                            gatherImage(ds, UnsafePointer(dyp), transposed.from(row: 4 * ci), count: 4,
                                        into: planeBufs[chunk], scratch: tile, relu: false, residual: nil)
                            let d = dxb + ci * h * w
                            if ow % 8 == 0 {
                                interleavePlanes(pl, into: d, rows: oh, width: ow)
                                continue
                            }
                            for y in 0..<h {
                                let a = y & 1, i = y >> 1
                                interleave(pl + 2 * a * size + i * ow, pl + (2 * a + 1) * size + i * ow, into: d + y * w, count: w)
                            }
                        }
                        continue
                    }
                    let gr = grids[chunk]
                    for f in 0..<k {
                        let d = gr + f * gstride + margin, s = dy + (b * k + f) * oh * ow
                        for oy in 0..<oh { (d + oy * pitch).update(from: s + oy * ow, count: ow) }
                    }
                    // Input gradient: tiles over each input channel's parity planes.
                    let gbase = UnsafePointer(gr + margin)
                    let planes = planeBufs[chunk]
                    for ti in 0..<tileCount {
                        let e = tinfo + 3 * ti
                        let t = e[0], width = e[1], ph = e[2]
                        for ci in 0..<c {
                            let row = ci * phases + ph
                            gatherTile(width, planes + ci * planeStride + t, 0, gbase + t, Int(bt[row]), Int(bt[row + 1]),
                                       boff!, bw!)
                        }
                    }
                    // Interleave the planes into dx: row y = 2i + py − 1 takes its even
                    // columns 2j from plane (py, 1) at (i, j), its odd ones 2j + 1 from plane
                    // (py, 0) at (i, j + 1).
                    for ci in 0..<c {
                        let pl = UnsafePointer(planes + ci * planeStride), d = dxb + ci * h * w
                        for y in 0..<h {
                            let py = (y + 1) & 1, i = (y + 1) >> 1
                            interleave(pl + (2 * py + 1) * rp + i * pitch, pl + 2 * py * rp + i * pitch + 1, into: d + y * w,
                                       count: w)
                        }
                    }
                }
                if streamDX { streamFence() }
            }
        } } } } } } } } } } } } } } } } } } } } } } } } } } } } } } } } } } }
        // Sum the per-thread partial weight gradients in a fixed order: threads lane-wise,
        // then the lanes, the taps split over the threads (was one scalar chain of adds on
        // one thread; 2-3% of a 64-channel 8x8 layer's weight gradient).
        if let gradValues {
            dwps.withUnsafeBufferPointer { parts in
                let parts = parts.baseAddress!
                Threads.parallelRanges(nv, minPerChunk: 256) { taps in
                    for i in taps { gradValues[i] = sumPartials(parts, chunkCount, i) }
                }
            }
        }
        if let db = gradBias {
            for f in 0..<k {
                var sum: Float = 0
                for b in 0..<n { sum += vectorSum(dy + (b * k + f) * oh * ow, oh * ow) }
                db[f] = sum
            }
        }
    }
}

/// The rows (output planes) of one gather over shifted copies: row r's taps are
/// taps[r]..<taps[r + 1], tap i reading at offset[i] with weight[i], starting from
/// initial[r]; with `usePatterns`, the per-pattern groups instead (as `patternGroupTile8`
/// takes them).
struct GatherRows {
    let taps: UnsafePointer<Int32>, offset: UnsafePointer<Int32>, weight: UnsafePointer<Float>
    let initial: UnsafePointer<Float>
    /// Set only with `usePatterns` (the arrays are empty otherwise).
    let groups: UnsafePointer<Int32>?, groupPattern: UnsafePointer<UInt8>?, groupStart: UnsafePointer<Int32>?
    let kernelBase: UnsafePointer<Int32>?, groupWeight: UnsafePointer<Float>?, tapBytes: UnsafePointer<Int>?
    let usePatterns: Bool

    /// The rows from row r on (per-row pointers advanced; the per-pattern groups too).
    func from(row r: Int) -> GatherRows {
        GatherRows(taps: taps + r, offset: offset, weight: weight, initial: initial + r, groups: groups.map { $0 + r },
                   groupPattern: groupPattern, groupStart: groupStart, kernelBase: kernelBase, groupWeight: groupWeight,
                   tapBytes: tapBytes, usePatterns: usePatterns)
    }
}

/// One image: out[r][0..<positions] for the `count` rows of `rows`, over the shifted copies
/// at `xp`, tile by tile (tiles outermost, so a tile's inputs stay in L1 across rows); then
/// + residual and max(0, ·) as asked. Full tiles are stored in place; a tile passing the
/// plane's end goes through `scratch`. `stream`: full tiles stored non-temporally (positions
/// a multiple of 16, `out` 64-byte aligned; the caller fences).
@inline(__always)
func gatherImage(_ sh: PatternConvKernel.Shifted, _ xp: UnsafePointer<Float>, _ rows: GatherRows, count: Int,
                 into out: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>, relu: Bool,
                 residual: UnsafePointer<Float>?, stream: Bool = false) {
    let size = sh.positions
    sh.tileStart.withUnsafeBufferPointer { tstart in
    sh.tileWidth.withUnsafeBufferPointer { twidth in
        for ti in 0..<tstart.count {
            let q = tstart[ti], width = twidth[ti]
            let valid = min(width, size - q), direct = valid == width
            for r in 0..<count {
                let y = out + r * size + q
                let dst = direct ? y : scratch
                if rows.usePatterns && width >= 64 {
                    for h in stride(from: 0, to: width, by: 64) {
                        patternGroupTile8(dst + h, rows.initial[r], xp + q + h, Int(rows.groups![r]), Int(rows.groups![r + 1]),
                                          rows.groupPattern!, rows.groupStart!, rows.kernelBase!, rows.groupWeight!, rows.tapBytes!)
                    }
                } else if direct {
                    // Residual and ReLU applied in registers, before the tile's one store.
                    gatherTile(width, y, rows.initial[r], xp + q, Int(rows.taps[r]), Int(rows.taps[r + 1]), rows.offset,
                               rows.weight, relu: relu, residual: residual.map { $0 + r * size + q }, stream: stream)
                    continue
                } else {
                    gatherTile(width, dst, rows.initial[r], xp + q, Int(rows.taps[r]), Int(rows.taps[r + 1]), rows.offset,
                               rows.weight)
                }
                if let residual {
                    addResidual(dst, residual + r * size + q, into: y, valid, relu: relu)
                } else if relu {
                    reluInto(dst, y, valid)
                } else if !direct {
                    copyFloats(dst, y, valid)
                }
            }
        }
    } }
}

/// The inputs of a (channel, pattern) group's four taps, 64 floats each, as sixteen vectors
/// (a0-a3 the first tap's, …, d0-d3 the fourth's).
@inline(__always)
func groupTaps(_ x: UnsafeRawPointer, _ o: UnsafePointer<Int32>)
    -> (SIMD16<Float>, SIMD16<Float>, SIMD16<Float>, SIMD16<Float>, SIMD16<Float>, SIMD16<Float>, SIMD16<Float>,
        SIMD16<Float>, SIMD16<Float>, SIMD16<Float>, SIMD16<Float>, SIMD16<Float>, SIMD16<Float>, SIMD16<Float>,
        SIMD16<Float>, SIMD16<Float>) {
    typealias V = SIMD16<Float>
    func tap(_ t: Int) -> (V, V, V, V) {
        let p = x + 4 * Int(o[t])
        return (p.loadUnaligned(as: V.self), p.loadUnaligned(fromByteOffset: 64, as: V.self),
                p.loadUnaligned(fromByteOffset: 128, as: V.self), p.loadUnaligned(fromByteOffset: 192, as: V.self))
    }
    let (a, b, c, d) = (tap(0), tap(1), tap(2), tap(3))
    return (a.0, a.1, a.2, a.3, b.0, b.1, b.2, b.3, c.0, c.1, c.2, c.3, d.0, d.1, d.2, d.3)
}

/// One image's weight gradient for 64-position planes, kernels grouped by (input channel,
/// pattern): per group its four taps' inputs (4 x 64 floats) in sixteen registers, then per
/// kernel its filter's output gradient (4 registers) against them: 16 multiply-adds for 4
/// loads, each tap's 16-lane partial sums updated once.
@inline(__always)
func weightGradGrouped(_ dw: UnsafeMutablePointer<Float>, _ dy: UnsafePointer<Float>, _ xp: UnsafePointer<Float>,
                       _ offsets: UnsafePointer<Int32>, _ start: UnsafePointer<Int32>, _ filter: UnsafePointer<Int32>,
                       _ slot: UnsafePointer<Int32>, groups: Int) {
    typealias V = SIMD16<Float>
    let x = UnsafeRawPointer(xp), g = UnsafeRawPointer(dy), out = UnsafeMutableRawPointer(dw)
    for gi in 0..<groups {
        let (a0, a1, a2, a3, b0, b1, b2, b3, c0, c1, c2, c3, d0, d1, d2, d3) = groupTaps(x, offsets + 4 * gi)
        for j in Int(start[gi])..<Int(start[gi + 1]) {
            let y = g + 256 * Int(filter[j])
            let y0 = y.loadUnaligned(as: V.self), y1 = y.loadUnaligned(fromByteOffset: 64, as: V.self)
            let y2 = y.loadUnaligned(fromByteOffset: 128, as: V.self), y3 = y.loadUnaligned(fromByteOffset: 192, as: V.self)
            var pa = y0 * a0, qa = y1 * a1, pb = y0 * b0, qb = y1 * b1
            var pc = y0 * c0, qc = y1 * c1, pd = y0 * d0, qd = y1 * d1
            pa.addProduct(y2, a2); qa.addProduct(y3, a3); pb.addProduct(y2, b2); qb.addProduct(y3, b3)
            pc.addProduct(y2, c2); qc.addProduct(y3, c3); pd.addProduct(y2, d2); qd.addProduct(y3, d3)
            let at = 64 * Int(slot[j])
            out.storeBytes(of: out.loadUnaligned(fromByteOffset: at, as: V.self) + pa + qa, toByteOffset: at, as: V.self)
            out.storeBytes(of: out.loadUnaligned(fromByteOffset: at + 64, as: V.self) + pb + qb, toByteOffset: at + 64, as: V.self)
            out.storeBytes(of: out.loadUnaligned(fromByteOffset: at + 128, as: V.self) + pc + qc, toByteOffset: at + 128, as: V.self)
            out.storeBytes(of: out.loadUnaligned(fromByteOffset: at + 192, as: V.self) + pd + qd, toByteOffset: at + 192, as: V.self)
        }
    }
}

/// A number of kernels one pass of `weightGradPlane` takes (a type, so each count gets its
/// own specialised loop with only its accumulators).
protocol PlaneKernelCount { static var n: Int { get } }
enum PlaneKernels2: PlaneKernelCount { static var n: Int { 2 } }
enum PlaneKernels3: PlaneKernelCount { static var n: Int { 3 } }
enum PlaneKernels4: PlaneKernelCount { static var n: Int { 4 } }
enum PlaneKernels5: PlaneKernelCount { static var n: Int { 5 } }
enum PlaneKernels6: PlaneKernelCount { static var n: Int { 6 } }

/// One image's weight gradient for planes of `positions` floats (a multiple of 32), kernels
/// grouped by (input channel, pattern) as in `weightGradGrouped`: per group, up to six
/// kernels in one pass hold their 4 x 4 tap sums in registers over the whole plane, each
/// 16-position step loading the group's four input taps once and each kernel's output
/// gradient once; the sums are added to the partials once per kernel and image.
@inline(__always)
func weightGradPlane(_ dw: UnsafeMutablePointer<Float>, _ dy: UnsafePointer<Float>, _ xp: UnsafePointer<Float>,
                     _ offsets: UnsafePointer<Int32>, _ start: UnsafePointer<Int32>, _ filter: UnsafePointer<Int32>,
                     _ slot: UnsafePointer<Int32>, groups: Int, positions: Int, images: Int = 1, xImage: Int = 0,
                     yImage: Int = 0) {
    typealias V = SIMD16<Float>
    let x = UnsafeRawPointer(xp), g = UnsafeRawPointer(dy), out = UnsafeMutableRawPointer(dw)
    let bytes = 4 &* positions, im = (images, xImage, yImage)
    for gi in 0..<groups {
        let o = offsets + 4 &* gi
        let t = (x + 4 &* Int(o[0]), x + 4 &* Int(o[1]), x + 4 &* Int(o[2]), x + 4 &* Int(o[3]))
        var j = Int(start[gi])
        let end = Int(start[gi + 1])
        while end &- j > 6 {
            planePass(PlaneKernels6.self, out, g, bytes, filter + j, slot + j, t, im)
            j &+= 6
        }
        switch end &- j {
        case 6: planePass(PlaneKernels6.self, out, g, bytes, filter + j, slot + j, t, im)
        case 5: planePass(PlaneKernels5.self, out, g, bytes, filter + j, slot + j, t, im)
        case 4: planePass(PlaneKernels4.self, out, g, bytes, filter + j, slot + j, t, im)
        case 3: planePass(PlaneKernels3.self, out, g, bytes, filter + j, slot + j, t, im)
        case 2: planePass(PlaneKernels2.self, out, g, bytes, filter + j, slot + j, t, im)
        case 1:
            // One kernel: two sums per tap (even and odd steps), eight chains.
            let (ta, tb, tc, td) = t
            let y0 = g + bytes &* Int(filter[j])
            var a0 = V(), b0 = V(), c0 = V(), d0 = V(), a1 = V(), b1 = V(), c1 = V(), d1 = V()
            for i in 0..<images {
            let xo = i &* xImage, yo = i &* yImage
            var v = 0
            while v < bytes {
                let e0 = y0.loadUnaligned(fromByteOffset: yo &+ v, as: V.self), e1 = y0.loadUnaligned(fromByteOffset: yo &+ v &+ 64, as: V.self)
                a0.addProduct(e0, ta.loadUnaligned(fromByteOffset: xo &+ v, as: V.self))
                b0.addProduct(e0, tb.loadUnaligned(fromByteOffset: xo &+ v, as: V.self))
                c0.addProduct(e0, tc.loadUnaligned(fromByteOffset: xo &+ v, as: V.self))
                d0.addProduct(e0, td.loadUnaligned(fromByteOffset: xo &+ v, as: V.self))
                a1.addProduct(e1, ta.loadUnaligned(fromByteOffset: xo &+ v &+ 64, as: V.self))
                b1.addProduct(e1, tb.loadUnaligned(fromByteOffset: xo &+ v &+ 64, as: V.self))
                c1.addProduct(e1, tc.loadUnaligned(fromByteOffset: xo &+ v &+ 64, as: V.self))
                d1.addProduct(e1, td.loadUnaligned(fromByteOffset: xo &+ v &+ 64, as: V.self))
                v &+= 128
            }
            }
            addTapSums(out, slot[0 &+ j], a0 + a1, b0 + b1, c0 + c1, d0 + d1)
        default: break
        }
    }
}

/// partials[slot·16 ..< slot·16 + 64] += the four taps' 16-lane sums.
@inline(__always)
func addTapSums(_ out: UnsafeMutableRawPointer, _ slot: Int32, _ a: SIMD16<Float>, _ b: SIMD16<Float>, _ c: SIMD16<Float>,
                _ d: SIMD16<Float>) {
    typealias V = SIMD16<Float>
    let at = 64 &* Int(slot)
    out.storeBytes(of: out.loadUnaligned(fromByteOffset: at, as: V.self) + a, toByteOffset: at, as: V.self)
    out.storeBytes(of: out.loadUnaligned(fromByteOffset: at &+ 64, as: V.self) + b, toByteOffset: at &+ 64, as: V.self)
    out.storeBytes(of: out.loadUnaligned(fromByteOffset: at &+ 128, as: V.self) + c, toByteOffset: at &+ 128, as: V.self)
    out.storeBytes(of: out.loadUnaligned(fromByteOffset: at &+ 192, as: V.self) + d, toByteOffset: at &+ 192, as: V.self)
}

/// One pass of `weightGradPlane` over N.n kernels (2 to 6) of a group: 4·N.n sums.
@inline(__always)
func planePass<N: PlaneKernelCount>(_: N.Type, _ out: UnsafeMutableRawPointer, _ g: UnsafeRawPointer, _ bytes: Int,
                                    _ filter: UnsafePointer<Int32>, _ slot: UnsafePointer<Int32>,
                                    _ t: (UnsafeRawPointer, UnsafeRawPointer, UnsafeRawPointer, UnsafeRawPointer),
                                    _ im: (Int, Int, Int)) {
    typealias V = SIMD16<Float>
    let n = N.n, (ta, tb, tc, td) = t
    @inline(__always) func plane(_ i: Int) -> UnsafeRawPointer { g + bytes &* Int(filter[min(i, n &- 1)]) }
    let y0 = plane(0), y1 = plane(1), y2 = plane(2), y3 = plane(3), y4 = plane(4), y5 = plane(5)
    var a0 = V(), b0 = V(), c0 = V(), d0 = V(), a1 = V(), b1 = V(), c1 = V(), d1 = V()
    var a2 = V(), b2 = V(), c2 = V(), d2 = V(), a3 = V(), b3 = V(), c3 = V(), d3 = V()
    var a4 = V(), b4 = V(), c4 = V(), d4 = V(), a5 = V(), b5 = V(), c5 = V(), d5 = V()
    for i in 0..<im.0 {
    let xo = i &* im.1, yo = i &* im.2
    var v = 0
    while v < bytes {
        let xa = ta.loadUnaligned(fromByteOffset: xo &+ v, as: V.self), xb = tb.loadUnaligned(fromByteOffset: xo &+ v, as: V.self)
        let xc = tc.loadUnaligned(fromByteOffset: xo &+ v, as: V.self), xd = td.loadUnaligned(fromByteOffset: xo &+ v, as: V.self)
        // One kernel's output gradient at this step times the four taps, into its four sums.
        @inline(__always) func step(_ y: UnsafeRawPointer, _ a: inout V, _ b: inout V, _ c: inout V, _ d: inout V) {
            let e = y.loadUnaligned(fromByteOffset: yo &+ v, as: V.self)
            a.addProduct(e, xa); b.addProduct(e, xb); c.addProduct(e, xc); d.addProduct(e, xd)
        }
        step(y0, &a0, &b0, &c0, &d0)
        step(y1, &a1, &b1, &c1, &d1)
        if n > 2 { step(y2, &a2, &b2, &c2, &d2) }
        if n > 3 { step(y3, &a3, &b3, &c3, &d3) }
        if n > 4 { step(y4, &a4, &b4, &c4, &d4) }
        if n > 5 { step(y5, &a5, &b5, &c5, &d5) }
        v &+= 64
    }
    }
    addTapSums(out, slot[0], a0, b0, c0, d0)
    addTapSums(out, slot[1], a1, b1, c1, d1)
    if n > 2 { addTapSums(out, slot[2], a2, b2, c2, d2) }
    if n > 3 { addTapSums(out, slot[3], a3, b3, c3, d3) }
    if n > 4 { addTapSums(out, slot[4], a4, b4, c4, d4) }
    if n > 5 { addTapSums(out, slot[5], a5, b5, c5, d5) }
}

/// Forward of one image with 64-position planes, kernels grouped by (input channel,
/// pattern): per group its four taps' inputs in sixteen registers, then per kernel its
/// filter's output plane (4 registers, initialised with the bias) += the four weights times
/// them.
@inline(__always)
func forwardGrouped(_ out: UnsafeMutablePointer<Float>, _ xp: UnsafePointer<Float>, _ offsets: UnsafePointer<Int32>,
                    _ start: UnsafePointer<Int32>, _ filter: UnsafePointer<Int32>, _ slot: UnsafePointer<Int32>,
                    _ weight: UnsafePointer<Float>, groups: Int) {
    typealias V = SIMD16<Float>
    let x = UnsafeRawPointer(xp), dst = UnsafeMutableRawPointer(out)
    for gi in 0..<groups {
        let (a0, a1, a2, a3, b0, b1, b2, b3, c0, c1, c2, c3, d0, d1, d2, d3) = groupTaps(x, offsets + 4 * gi)
        for j in Int(start[gi])..<Int(start[gi + 1]) {
            let at = 256 * Int(filter[j]), w = weight + Int(slot[j])
            let wa = V(repeating: w[0]), wb = V(repeating: w[1]), wc = V(repeating: w[2]), wd = V(repeating: w[3])
            var y0 = dst.loadUnaligned(fromByteOffset: at, as: V.self), y1 = dst.loadUnaligned(fromByteOffset: at + 64, as: V.self)
            var y2 = dst.loadUnaligned(fromByteOffset: at + 128, as: V.self)
            var y3 = dst.loadUnaligned(fromByteOffset: at + 192, as: V.self)
            y0.addProduct(wa, a0); y1.addProduct(wa, a1); y2.addProduct(wa, a2); y3.addProduct(wa, a3)
            y0.addProduct(wb, b0); y1.addProduct(wb, b1); y2.addProduct(wb, b2); y3.addProduct(wb, b3)
            y0.addProduct(wc, c0); y1.addProduct(wc, c1); y2.addProduct(wc, c2); y3.addProduct(wc, c3)
            y0.addProduct(wd, d0); y1.addProduct(wd, d1); y2.addProduct(wd, d2); y3.addProduct(wd, d3)
            dst.storeBytes(of: y0, toByteOffset: at, as: V.self)
            dst.storeBytes(of: y1, toByteOffset: at + 64, as: V.self)
            dst.storeBytes(of: y2, toByteOffset: at + 128, as: V.self)
            dst.storeBytes(of: y3, toByteOffset: at + 192, as: V.self)
        }
    }
}

/// `gatherTile16/8/4/2/1` by tile width in floats.
@inline(__always)
func gatherTile(_ width: Int, _ dst: UnsafeMutablePointer<Float>, _ initial: Float, _ base: UnsafePointer<Float>,
                _ i0: Int, _ i1: Int, _ off: UnsafePointer<Int32>, _ w: UnsafePointer<Float>, relu: Bool = false,
                residual: UnsafePointer<Float>? = nil, stream: Bool = false) {
    switch width {
    case 128: gatherTile16(dst, initial, base, i0, i1, off, w, relu, residual, stream)
    case 64: gatherTile8(dst, initial, base, i0, i1, off, w, relu, residual, stream)
    case 32: gatherTile4(dst, initial, base, i0, i1, off, w, relu, residual, stream)
    case 16: gatherTile2(dst, initial, base, i0, i1, off, w, relu, residual, stream)
    default: gatherTile1(dst, initial, base, i0, i1, off, w, relu, residual, false)
    }
}

/// `weightTile16/8/4/2/1` by tile width in floats.
@inline(__always)
func weightTile(_ width: Int, _ dw: UnsafeMutablePointer<Float>, _ dy: UnsafePointer<Float>, _ x: UnsafePointer<Float>,
                _ i0: Int, _ i1: Int, _ off: UnsafePointer<Int32>) {
    switch width {
    case 128: weightTile16(dw, dy, x, i0, i1, off)
    case 64: weightTile8(dw, dy, x, i0, i1, off)
    case 32: weightTile4(dw, dy, x, i0, i1, off)
    case 16: weightTile2(dw, dy, x, i0, i1, off)
    default: weightTile1(dw, dy, x, i0, i1, off)
    }
}

/// Σ over threads t of the `weightLanes` partial sums of tap i, dw[t][i·lanes ..< (i + 1)·lanes]:
/// added lane-wise in thread order, then across the lanes.
@inline(__always)
func sumPartials(_ dw: UnsafePointer<UnsafeMutablePointer<Float>>, _ threads: Int, _ i: Int) -> Float {
    if weightLanes == 16 {
        var v = UnsafeRawPointer(dw[0] + 16 * i).loadUnaligned(as: SIMD16<Float>.self)
        for t in 1..<max(threads, 1) { v += UnsafeRawPointer(dw[t] + 16 * i).loadUnaligned(as: SIMD16<Float>.self) }
        return v.sum()
    }
    var v = UnsafeRawPointer(dw[0] + weightLanes * i).loadUnaligned(as: V8.self)
    for t in 1..<max(threads, 1) { v += UnsafeRawPointer(dw[t] + weightLanes * i).loadUnaligned(as: V8.self) }
    return v.sum()
}

/// dst[0..<count] = max(0, src[0..<count]) (src and dst may be the same).
@inline(__always)
func reluInto(_ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<Float>, _ count: Int) {
    let t = UnsafeRawPointer(src), d = UnsafeMutableRawPointer(dst)
    var j = 0
    while j + 8 <= count {
        d.storeBytes(of: relu8(t.loadUnaligned(fromByteOffset: j * 4, as: V8.self)), toByteOffset: j * 4, as: V8.self)
        j += 8
    }
    while j < count { dst[j] = max(src[j], 0); j += 1 }
}

/// dst[0..<count] = src + residual, then max(0, ·) when `relu` (src and dst may be the same).
@inline(__always)
func addResidual(_ src: UnsafePointer<Float>, _ res: UnsafePointer<Float>, into dst: UnsafeMutablePointer<Float>,
                 _ count: Int, relu: Bool) {
    let t = UnsafeRawPointer(src), r = UnsafeRawPointer(res), d = UnsafeMutableRawPointer(dst)
    var j = 0
    while j + 8 <= count {
        let v = t.loadUnaligned(fromByteOffset: j * 4, as: V8.self) + r.loadUnaligned(fromByteOffset: j * 4, as: V8.self)
        d.storeBytes(of: relu ? relu8(v) : v, toByteOffset: j * 4, as: V8.self)
        j += 8
    }
    while j < count {
        let v = src[j] + res[j]
        dst[j] = relu ? max(v, 0) : v
        j += 1
    }
}

/// dst[0..<count] = src[0..<count] for short runs (8-64 floats): an inline vector copy,
/// not a memmove call.
@inline(__always)
func copyFloats(_ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<Float>, _ count: Int) {
    let t = UnsafeRawPointer(src), d = UnsafeMutableRawPointer(dst)
    var j = 0
    while j + 8 <= count {
        d.storeBytes(of: t.loadUnaligned(fromByteOffset: j * 4, as: V8.self), toByteOffset: j * 4, as: V8.self)
        j += 8
    }
    while j < count { dst[j] = src[j]; j += 1 }
}

/// dst[2j] = even[j], dst[2j + 1] = odd[j] for the `count` entries of dst (one row of a
/// stride-2 input gradient from two parity planes).
@inline(__always)
func interleave(_ even: UnsafePointer<Float>, _ odd: UnsafePointer<Float>, into dst: UnsafeMutablePointer<Float>,
                count: Int) {
    let a = UnsafeRawPointer(even), b = UnsafeRawPointer(odd), d = UnsafeMutableRawPointer(dst)
    var j = 0
    while 2 * j + 32 <= count {
        var v = SIMD32<Float>()
        v.evenHalf = a.loadUnaligned(fromByteOffset: 4 * j, as: SIMD16<Float>.self)
        v.oddHalf = b.loadUnaligned(fromByteOffset: 4 * j, as: SIMD16<Float>.self)
        d.storeBytes(of: v, toByteOffset: 8 * j, as: SIMD32<Float>.self)
        j += 16
    }
    while 2 * j + 16 <= count {
        var v = SIMD16<Float>()
        v.evenHalf = a.loadUnaligned(fromByteOffset: 4 * j, as: V8.self)
        v.oddHalf = b.loadUnaligned(fromByteOffset: 4 * j, as: V8.self)
        d.storeBytes(of: v, toByteOffset: 8 * j, as: SIMD16<Float>.self)
        j += 8
    }
    while 2 * j < count {
        dst[2 * j] = even[j]
        if 2 * j + 1 < count { dst[2 * j + 1] = odd[j] }
        j += 1
    }
}

/// The stride-2 input gradient of one channel from its four parity planes (each rows x
/// width, width a multiple of 8, plane 2a + b holding (2i + a, 2j + b)): one flat loop of
/// 16-float stores (a call of `interleave` per row cost more than the stores).
@inline(__always)
func interleavePlanes(_ planes: UnsafePointer<Float>, into dst: UnsafeMutablePointer<Float>, rows: Int, width: Int) {
    let size = rows &* width, w = 2 &* width
    let d = UnsafeMutableRawPointer(dst)
    for a in 0..<2 {
        let e = UnsafeRawPointer(planes + 2 &* a &* size), o = e + 4 &* size
        for i in 0..<rows {
            let src = 4 &* i &* width, at = 4 &* (2 &* i &+ a) &* w
            var j = 0
            while j < width {
                var v = SIMD16<Float>()
                v.evenHalf = e.loadUnaligned(fromByteOffset: src &+ 4 &* j, as: V8.self)
                v.oddHalf = o.loadUnaligned(fromByteOffset: src &+ 4 &* j, as: V8.self)
                d.storeBytes(of: v, toByteOffset: at &+ 8 &* j, as: SIMD16<Float>.self)
                j &+= 8
            }
        }
    }
}

/// Weight gradient of one filter over 128 positions (its output gradient `dy[0..<128]` in
/// eight registers) at stride 1 with OW = 16·`vectorsPerRow` (1 or 2): each pair j in
/// p0..<p1 of vertically adjacent taps reads x[pOff[j] ..< pOff[j] + 128 + OW] once, the
/// top tap's products from its first 128 floats and the bottom tap's from the same vectors
/// one row on (8 + OW / 16 loads for 16 multiply-adds, against 16 for two single taps); the
/// 16-lane partial sums at slots pSlot[2j], pSlot[2j + 1] updated once. Single taps j in
/// s0..<s1 as `weightTile16`, at slot sSlot[j].
@inline(__always)
func weightPairTile(_ dw: UnsafeMutablePointer<Float>, _ dy: UnsafePointer<Float>, _ x: UnsafePointer<Float>,
                    vectorsPerRow: Int, _ p0: Int32, _ p1: Int32, _ pOff: UnsafePointer<Int32>,
                    _ pSlot: UnsafePointer<Int32>, _ s0: Int32, _ s1: Int32, _ sOff: UnsafePointer<Int32>,
                    _ sSlot: UnsafePointer<Int32>) {
    typealias V = SIMD16<Float>
    let g = UnsafeRawPointer(dy), b = UnsafeRawPointer(x), out = UnsafeMutableRawPointer(dw)
    let d0 = g.loadUnaligned(as: V.self), d1 = g.loadUnaligned(fromByteOffset: 64, as: V.self)
    let d2 = g.loadUnaligned(fromByteOffset: 128, as: V.self), d3 = g.loadUnaligned(fromByteOffset: 192, as: V.self)
    let d4 = g.loadUnaligned(fromByteOffset: 256, as: V.self), d5 = g.loadUnaligned(fromByteOffset: 320, as: V.self)
    let d6 = g.loadUnaligned(fromByteOffset: 384, as: V.self), d7 = g.loadUnaligned(fromByteOffset: 448, as: V.self)
    @inline(__always) func add(_ slot: Int32, _ v: V) {
        let o = 64 &* Int(slot)
        out.storeBytes(of: out.loadUnaligned(fromByteOffset: o, as: V.self) + v, toByteOffset: o, as: V.self)
    }
    var j = Int(p0)
    while j < Int(p1) {
        let s = b + Int(pOff[j]) &* 4
        let x0 = s.loadUnaligned(as: V.self), x1 = s.loadUnaligned(fromByteOffset: 64, as: V.self)
        let x2 = s.loadUnaligned(fromByteOffset: 128, as: V.self), x3 = s.loadUnaligned(fromByteOffset: 192, as: V.self)
        let x4 = s.loadUnaligned(fromByteOffset: 256, as: V.self), x5 = s.loadUnaligned(fromByteOffset: 320, as: V.self)
        let x6 = s.loadUnaligned(fromByteOffset: 384, as: V.self), x7 = s.loadUnaligned(fromByteOffset: 448, as: V.self)
        let x8 = s.loadUnaligned(fromByteOffset: 512, as: V.self)
        var a0 = d0 * x0, a1 = d1 * x1
        a0.addProduct(d2, x2); a1.addProduct(d3, x3); a0.addProduct(d4, x4); a1.addProduct(d5, x5)
        a0.addProduct(d6, x6); a1.addProduct(d7, x7)
        var c0: V, c1: V
        if vectorsPerRow == 1 {
            c0 = d0 * x1; c1 = d1 * x2
            c0.addProduct(d2, x3); c1.addProduct(d3, x4); c0.addProduct(d4, x5); c1.addProduct(d5, x6)
            c0.addProduct(d6, x7); c1.addProduct(d7, x8)
        } else {
            let x9 = s.loadUnaligned(fromByteOffset: 576, as: V.self)
            c0 = d0 * x2; c1 = d1 * x3
            c0.addProduct(d2, x4); c1.addProduct(d3, x5); c0.addProduct(d4, x6); c1.addProduct(d5, x7)
            c0.addProduct(d6, x8); c1.addProduct(d7, x9)
        }
        add(pSlot[2 &* j], a0 + a1)
        add(pSlot[2 &* j &+ 1], c0 + c1)
        j &+= 1
    }
    j = Int(s0)
    while j < Int(s1) {
        let s = b + Int(sOff[j]) &* 4
        var a0 = d0 * s.loadUnaligned(as: V.self), a1 = d1 * s.loadUnaligned(fromByteOffset: 64, as: V.self)
        a0.addProduct(d2, s.loadUnaligned(fromByteOffset: 128, as: V.self))
        a1.addProduct(d3, s.loadUnaligned(fromByteOffset: 192, as: V.self))
        a0.addProduct(d4, s.loadUnaligned(fromByteOffset: 256, as: V.self))
        a1.addProduct(d5, s.loadUnaligned(fromByteOffset: 320, as: V.self))
        a0.addProduct(d6, s.loadUnaligned(fromByteOffset: 384, as: V.self))
        a1.addProduct(d7, s.loadUnaligned(fromByteOffset: 448, as: V.self))
        add(sSlot[j], a0 + a1)
        j &+= 1
    }
}

/// Stores 16 positions (pos..<pos + 16 of an OH x OW parity-plane pair (a, 0), (a, 1)) of a
/// stride-2 input gradient: dx row 2i + a takes plane (a, 0) at its even columns and (a, 1)
/// at its odd ones. OW a multiple of 16 (one row) or OW = 8 (two rows).
@inline(__always)
func storeInterleaved(_ d: UnsafeMutableRawPointer, _ even: SIMD16<Float>, _ odd: SIMD16<Float>, pos: Int, a: Int,
                      width ow: Int, streaming: Bool) {
    var v = SIMD32<Float>()
    v.evenHalf = even
    v.oddHalf = odd
    let w = 2 &* ow
    if ow == 8 {
        let i = pos &>> 3
        let p0 = d + 4 &* (2 &* i &+ a) &* w, p1 = d + 4 &* (2 &* i &+ 2 &+ a) &* w
        if streaming {
            streamStore(v.lowHalf, p0)
            streamStore(v.highHalf, p1)
        } else {
            p0.storeBytes(of: v.lowHalf, as: SIMD16<Float>.self)
            p1.storeBytes(of: v.highHalf, as: SIMD16<Float>.self)
        }
    } else {
        let i = pos / ow, j = pos &- i &* ow
        let p = d + 4 &* ((2 &* i &+ a) &* w &+ 2 &* j)
        if streaming { streamStore(v, p) } else { p.storeBytes(of: v, as: SIMD32<Float>.self) }
    }
}

/// One input channel's four parity planes (0, 0), (0, 1), (1, 0), (1, 1) at 64 positions,
/// from its shift-class lists `r[0..<5]` (`PatternConvKernel.Plan.srcStart`): kernel j reads
/// 64 floats at `b + off[j]` (v = 0 classes) or `cb + off[j]` (v = 1, the kx = 2 copy) once
/// and multiplies them into every plane its class reaches, one broadcast weight each.
@inline(__always)
func sourceTile(_ b: UnsafeRawPointer, _ cb: UnsafeRawPointer, _ r: UnsafePointer<Int32>, _ off: UnsafePointer<Int32>,
                _ w: UnsafePointer<Float>)
    -> (SIMD16<Float>, SIMD16<Float>, SIMD16<Float>, SIMD16<Float>, SIMD16<Float>, SIMD16<Float>, SIMD16<Float>,
        SIMD16<Float>, SIMD16<Float>, SIMD16<Float>, SIMD16<Float>, SIMD16<Float>, SIMD16<Float>, SIMD16<Float>,
        SIMD16<Float>, SIMD16<Float>) {
    typealias V = SIMD16<Float>
    typealias Q = (V, V, V, V)
    @inline(__always) func load(_ base: UnsafeRawPointer, _ j: Int) -> Q {
        let s = base + Int(off[j]) &* 4
        return (s.loadUnaligned(as: V.self), s.loadUnaligned(fromByteOffset: 64, as: V.self),
                s.loadUnaligned(fromByteOffset: 128, as: V.self), s.loadUnaligned(fromByteOffset: 192, as: V.self))
    }
    @inline(__always) func add(_ a: inout Q, _ w: Float, _ s: Q) {
        let v = V(repeating: w)
        a.0.addProduct(v, s.0); a.1.addProduct(v, s.1); a.2.addProduct(v, s.2); a.3.addProduct(v, s.3)
    }
    var e = (V(), V(), V(), V()), f = e, g = e, h = e
    var j = Int(r[0])
    while j < Int(r[1]) {  // (0, 0): taps 4, 5, 7, 8 into the four planes
        let s = load(b, j), wj = w + 4 &* j
        add(&e, wj[0], s); add(&f, wj[1], s); add(&g, wj[2], s); add(&h, wj[3], s)
        j &+= 1
    }
    while j < Int(r[2]) {  // (1, 0): taps 1, 2 into planes (1, 0), (1, 1)
        let s = load(b, j)
        add(&g, w[4 &* j], s); add(&h, w[4 &* j &+ 1], s)
        j &+= 1
    }
    while j < Int(r[3]) {  // (0, 1): taps 3, 6 into planes (0, 1), (1, 1)
        let s = load(cb, j)
        add(&f, w[4 &* j], s); add(&h, w[4 &* j &+ 1], s)
        j &+= 1
    }
    while j < Int(r[4]) {  // (1, 1): tap 0 into plane (1, 1)
        add(&h, w[4 &* j], load(cb, j))
        j &+= 1
    }
    return (e.0, e.1, e.2, e.3, f.0, f.1, f.2, f.3, g.0, g.1, g.2, g.3, h.0, h.1, h.2, h.3)
}

/// One image's stride-2 input gradient by source (OW in {8, 16, 32, 64}, OH·OW a multiple
/// of 64): per 64 positions of the parity planes (outermost, so their sources stay in L1
/// across channels) and per input channel, `sourceTile` over the output gradient `dy` and
/// its kx = 2 copy `dyp` (entries at `read`); the last 64 positions read `tail` instead of
/// dy (entries at `tailRead`: each filter's last 64 positions, then zeros, so row OH reads
/// zero and nothing past dy is read). The planes are interleaved straight into dx.
@inline(__always)
func stride2InputGradient(_ dx: UnsafeMutablePointer<Float>, _ dy: UnsafePointer<Float>, _ tail: UnsafePointer<Float>,
                          _ dyp: UnsafePointer<Float>, _ start: UnsafePointer<Int32>, _ read: UnsafePointer<Int32>,
                          _ tailRead: UnsafePointer<Int32>, _ w: UnsafePointer<Float>, channels c: Int, rows oh: Int,
                          width ow: Int, streaming: Bool) {
    let size = oh &* ow, plane = 4 &* size
    var q = 0
    while q < size {
        let last = q &+ 64 == size
        let b = last ? UnsafeRawPointer(tail) : UnsafeRawPointer(dy + q), off = last ? tailRead : read
        let cb = UnsafeRawPointer(dyp + q)
        for ci in 0..<c {
            let (e0, e1, e2, e3, f0, f1, f2, f3, g0, g1, g2, g3, h0, h1, h2, h3) = sourceTile(b, cb, start + 4 &* ci, off, w)
            let d = UnsafeMutableRawPointer(dx + ci &* plane)
            storeInterleaved(d, e0, f0, pos: q, a: 0, width: ow, streaming: streaming)
            storeInterleaved(d, e1, f1, pos: q &+ 16, a: 0, width: ow, streaming: streaming)
            storeInterleaved(d, e2, f2, pos: q &+ 32, a: 0, width: ow, streaming: streaming)
            storeInterleaved(d, e3, f3, pos: q &+ 48, a: 0, width: ow, streaming: streaming)
            storeInterleaved(d, g0, h0, pos: q, a: 1, width: ow, streaming: streaming)
            storeInterleaved(d, g1, h1, pos: q &+ 16, a: 1, width: ow, streaming: streaming)
            storeInterleaved(d, g2, h2, pos: q &+ 32, a: 1, width: ow, streaming: streaming)
            storeInterleaved(d, g3, h3, pos: q &+ 48, a: 1, width: ow, streaming: streaming)
        }
        q &+= 64
    }
}

/// max(v, 0) lane-wise as a select (the standard library's `pointwiseMax` was not inlined
/// here: a function call per eight values, which doubled a pattern conv's time at inference).
@inline(__always)
func relu8(_ v: V8) -> V8 {
    var r = v
    r.replace(with: V8(repeating: 0), where: v .< V8(repeating: 0))
    return r
}

typealias V8 = SIMD8<Float>

/// dst[p] = src[p + kx − 1] for p in 0..<n, zero where that column falls outside its row
/// of `w` (p mod w = 0 for kx = 0, w − 1 for kx = 2): 16-float loads one float off, the
/// edge columns masked with `masks[p mod w]` (`Shifted.edgeMask0/2`); the first (kx = 0)
/// or last (kx = 2) full vector is shifted in registers so that nothing outside src is read.
@inline(__always)
func shiftedPlane(_ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<Float>, _ n: Int, _ w: Int, kx: Int,
                  _ masks: UnsafePointer<SIMD16<UInt32>>) {
    typealias V = SIMD16<Float>
    typealias U = SIMD16<UInt32>
    let sr = UnsafeRawPointer(src), d = UnsafeMutableRawPointer(dst)
    let full = n / 16 * 16, advance = 16 % w
    @inline(__always) func masked(_ v: V, _ m: Int) -> V { unsafeBitCast(unsafeBitCast(v, to: U.self) & masks[m], to: V.self) }
    var p = 0, m = 0  // m = p mod w
    if kx == 0 {
        if full > 0 {
            let v = sr.loadUnaligned(as: V.self)
            var e = V()
            for i in 1..<16 { e[i] = v[i - 1] }
            d.storeBytes(of: masked(e, 0), as: V.self)
            p = 16
            m = advance
        }
        while p < full {
            d.storeBytes(of: masked(sr.loadUnaligned(fromByteOffset: 4 * p - 4, as: V.self), m), toByteOffset: 4 * p, as: V.self)
            p += 16
            m += advance
            if m >= w { m -= w }
        }
        while p < n { dst[p] = p % w == 0 ? 0 : src[p - 1]; p += 1 }
    } else {
        // Vectors that read src[p + 1 ..< p + 17] inside the plane.
        while p + 16 < n && p < full {
            d.storeBytes(of: masked(sr.loadUnaligned(fromByteOffset: 4 * p + 4, as: V.self), m), toByteOffset: 4 * p, as: V.self)
            p += 16
            m += advance
            if m >= w { m -= w }
        }
        if p < full {
            // The plane's last 16 floats (n a multiple of 16).
            let v = sr.loadUnaligned(fromByteOffset: 4 * p, as: V.self)
            var e = V()
            for i in 0..<15 { e[i] = v[i + 1] }
            d.storeBytes(of: masked(e, m), toByteOffset: 4 * p, as: V.self)
            p += 16
        }
        while p < n { dst[p] = p % w == w - 1 ? 0 : src[p + 1]; p += 1 }
    }
}
