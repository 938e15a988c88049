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
    public let value: [Float]
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

    public var keptKernels: Int { channel.count }

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

/// Forward convolution with pattern-sparse 3x3 weights (padding 1, stride 1 or 2): the
/// work is proportional to the kept taps. Each image is zero-padded once into a
/// per-thread buffer — for stride 2 split into its four (row, column) parity planes, so
/// that stride 2 reads contiguous rows too — and each filter's output is accumulated
/// over the whole plane at once (its pad columns computed and dropped), four taps of a
/// kernel per pass, SIMD over the plane.
public final class PatternConvKernel {
    public let geometry: ConvGeometry
    private let chunks: Int
    private let padded: [Tensor]
    private let accumulators: [Tensor]
    private var backwardBuffers: (grid: [Tensor], dx: [Tensor], dw: [Tensor])?
    /// Source plane layout: rows × pitch per (parity) plane, planes per channel.
    private let rows: Int, pitch: Int, phases: Int

    public static func supports(_ g: ConvGeometry) -> Bool {
        g.kernelSize == 3 && g.padding == 1 && (g.stride == 1 || g.stride == 2)
    }

    public init(_ g: ConvGeometry) {
        precondition(PatternConvKernel.supports(g), "pattern conv needs 3x3, padding 1, stride 1 or 2: \(g)")
        geometry = g
        chunks = max(1, min(Threads.count, g.batch))
        if g.stride == 1 {
            (rows, pitch, phases) = (g.height + 2, g.width + 2, 1)
        } else {
            (rows, pitch, phases) = ((g.height + 3) / 2, (g.width + 3) / 2, 4)
        }
        let planeSize = rows * pitch * phases, accSize = g.outHeight * pitch
        padded = (0..<chunks).map { _ in Tensor(shape: [g.inChannels, planeSize]) }
        accumulators = (0..<chunks).map { _ in Tensor(shape: [accSize]) }
    }

    /// Zero-padded copy of one image [C, H, W] into the plane layout (split by parity
    /// for stride 2): position (y, x) of the padded image.
    @inline(__always)
    func planeIndex(_ py: Int, _ px: Int) -> Int {
        phases == 1 ? py * pitch + px : ((py & 1) * 2 + (px & 1)) * rows * pitch + (py >> 1) * pitch + (px >> 1)
    }

    func pad(_ src: UnsafePointer<Float>, into dst: UnsafeMutablePointer<Float>) {
        let g = geometry, c = g.inChannels, h = g.height, w = g.width
        let plane = rows * pitch * phases
        dst.update(repeating: 0, count: c * plane)
        for ci in 0..<c {
            let s = src + ci * h * w, d = dst + ci * plane
            if phases == 1 {
                for y in 0..<h { (d + (y + 1) * pitch + 1).update(from: s + y * w, count: w) }
            } else {
                for y in 0..<h { for x in 0..<w { d[planeIndex(y + 1, x + 1)] = s[y * w + x] } }
            }
        }
    }

    /// Where tap t = (ky, kx) reads for the output at (0, 0), in a channel's planes.
    var tapOffsets: [Int] { (0..<9).map { planeIndex($0 / 3, $0 % 3) } }

    /// `output = conv(input, weights) + bias`; input [N, C, H, W], output [N, K, OH, OW].
    public func forward(input: Tensor, weights pw: PatternWeights, bias: Tensor?, output: Tensor) {
        let g = geometry
        precondition(input.shape == g.inputShape && output.shape == g.outputShape, "pattern conv forward: shapes")
        precondition(pw.outChannels == g.outChannels && pw.inChannels == g.inChannels, "pattern conv: weight shape")
        let n = g.batch, c = g.inChannels, k = g.outChannels, h = g.height, w = g.width
        let oh = g.outHeight, ow = g.outWidth
        let plane = rows * pitch * phases, pitch = self.pitch
        let xin = input.data, yout = output.data, bufs = padded.map(\.data), accs = accumulators.map(\.data)
        let chunkCount = chunks
        let tapOffset = tapOffsets
        let span = (oh - 1) * pitch + ow
        pw.rowStart.withUnsafeBufferPointer { rs in
        pw.channel.withUnsafeBufferPointer { ch in
        pw.tapStart.withUnsafeBufferPointer { ts in
        pw.tap.withUnsafeBufferPointer { tp in
        pw.value.withUnsafeBufferPointer { vs in
            Threads.parallelFor(chunkCount) { chunk in
                let xp = bufs[chunk], acc = accs[chunk]
                for b in (n * chunk / chunkCount)..<(n * (chunk + 1) / chunkCount) {
                    self.pad(xin + b * c * h * w, into: xp)
                    for f in 0..<k {
                        let yf = yout + (b * k + f) * oh * ow
                        acc.update(repeating: bias?[f] ?? 0, count: span)
                        for e in Int(rs[f])..<Int(rs[f + 1]) {
                            let xc = xp + Int(ch[e]) * plane
                            var i = Int(ts[e])
                            let end = Int(ts[e + 1])
                            // Four taps per pass (a 4-entry pattern in one): one load and
                            // store of the accumulator per four multiply-adds.
                            while i + 4 <= end {
                                let w0 = vs[i], w1 = vs[i + 1], w2 = vs[i + 2], w3 = vs[i + 3]
                                let s0 = xc + tapOffset[Int(tp[i])], s1 = xc + tapOffset[Int(tp[i + 1])]
                                let s2 = xc + tapOffset[Int(tp[i + 2])], s3 = xc + tapOffset[Int(tp[i + 3])]
                                for j in 0..<span { acc[j] += w0 * s0[j] + w1 * s1[j] + w2 * s2[j] + w3 * s3[j] }
                                i += 4
                            }
                            while i < end {
                                let wv = vs[i]
                                let src = xc + tapOffset[Int(tp[i])]
                                for j in 0..<span { acc[j] += wv * src[j] }
                                i += 1
                            }
                        }
                        for oy in 0..<oh { (yf + oy * ow).update(from: acc + oy * pitch, count: ow) }
                    }
                }
            }
        } } } } }
    }

    /// Input gradient and the gradient of the kept weights only (`gradValues`, aligned
    /// with `weights.value`), from `gradOutput`; `gradInput` nil skips the input gradient.
    /// Both as gathers over the plane layout: dx_plane[q] = Σ_t w_t·dy[q − off_t] and
    /// dw_t = Σ_j dy[j]·x_plane[off_t + j].
    public func backward(input: Tensor, weights pw: PatternWeights, gradOutput: Tensor, gradInput: Tensor?,
                         gradValues: UnsafeMutablePointer<Float>, gradBias: Tensor?) {
        let g = geometry
        precondition(input.shape == g.inputShape && gradOutput.shape == g.outputShape, "pattern conv backward: shapes")
        let n = g.batch, c = g.inChannels, k = g.outChannels, h = g.height, w = g.width
        let oh = g.outHeight, ow = g.outWidth
        let pitch = self.pitch, plane = rows * pitch * phases, span = (oh - 1) * pitch + ow
        let offs = tapOffsets
        let margin = offs.max()!
        let nv = pw.value.count
        let chunkCount = chunks
        let byC = pw.byInputChannel()
        // Per chunk: the image's padded input, its output gradients on the plane grid
        // (with `margin` zeros before and after), the input-gradient plane, dw partials.
        // Buffers live in the kernel (kept alive by self, reused by every call).
        if backwardBuffers == nil || backwardBuffers!.dw[0].count < max(nv, 1) {
            backwardBuffers = ((0..<chunkCount).map { _ in Tensor(shape: [k, margin + plane + margin]) },
                               (0..<chunkCount).map { _ in Tensor(shape: [plane]) },
                               (0..<chunkCount).map { _ in Tensor(shape: [max(nv, 1)]) })
        }
        let bufs = backwardBuffers!
        let xbuf = padded.map(\.data)
        let grids = bufs.grid.map(\.data), dxps = bufs.dx.map(\.data), dwps = bufs.dw.map(\.data)
        let xin = input.data, dy = gradOutput.data, dx = gradInput?.data
        let gstride = margin + plane + margin
        pw.rowStart.withUnsafeBufferPointer { rs in
        pw.tapStart.withUnsafeBufferPointer { ts in
        pw.tap.withUnsafeBufferPointer { tp in
        pw.channel.withUnsafeBufferPointer { ch in
        pw.value.withUnsafeBufferPointer { vs in
            Threads.parallelFor(chunkCount) { chunk in
                let xp = xbuf[chunk], gr = grids[chunk], acc = dxps[chunk], dwv = dwps[chunk]
                dwv.update(repeating: 0, count: max(nv, 1))
                gr.update(repeating: 0, count: k * gstride)
                for b in (n * chunk / chunkCount)..<(n * (chunk + 1) / chunkCount) {
                    self.pad(xin + b * c * h * w, into: xp)
                    for f in 0..<k {
                        let d = gr + f * gstride + margin, s = dy + (b * k + f) * oh * ow
                        for oy in 0..<oh { (d + oy * pitch).update(from: s + oy * ow, count: ow) }
                    }
                    // Weight gradient of the kept taps: dot products over the grid.
                    for f in 0..<k {
                        let d = UnsafePointer(gr + f * gstride + margin)
                        for e in Int(rs[f])..<Int(rs[f + 1]) {
                            let xc = UnsafePointer(xp + Int(ch[e]) * plane)
                            for i in Int(ts[e])..<Int(ts[e + 1]) {
                                dwv[i] += vectorDot(d, xc + offs[Int(tp[i])], span)
                            }
                        }
                    }
                    guard let dx else { continue }
                    // Input gradient: gather per input channel over its plane, four taps a pass.
                    for ci in 0..<c {
                        acc.update(repeating: 0, count: plane)
                        for e in Int(byC.rowStart[ci])..<Int(byC.rowStart[ci + 1]) {
                            let d = gr + Int(byC.filter[e]) * gstride + margin
                            var i = Int(byC.tapStart[e])
                            let end = Int(byC.tapStart[e + 1])
                            while i + 4 <= end {
                                let w0 = vs[Int(byC.valueIndex[i])], w1 = vs[Int(byC.valueIndex[i + 1])]
                                let w2 = vs[Int(byC.valueIndex[i + 2])], w3 = vs[Int(byC.valueIndex[i + 3])]
                                let s0 = d - offs[Int(byC.tap[i])], s1 = d - offs[Int(byC.tap[i + 1])]
                                let s2 = d - offs[Int(byC.tap[i + 2])], s3 = d - offs[Int(byC.tap[i + 3])]
                                for q in 0..<plane { acc[q] += w0 * s0[q] + w1 * s1[q] + w2 * s2[q] + w3 * s3[q] }
                                i += 4
                            }
                            while i < end {
                                let wv = vs[Int(byC.valueIndex[i])], s0 = d - offs[Int(byC.tap[i])]
                                for q in 0..<plane { acc[q] += wv * s0[q] }
                                i += 1
                            }
                        }
                        let out = dx + (b * c + ci) * h * w
                        for y in 0..<h { for x in 0..<w { out[y * w + x] = acc[self.planeIndex(y + 1, x + 1)] } }
                    }
                }
            }
        } } } } }
        // Sum the per-thread weight gradients in a fixed order.
        gradValues.update(repeating: 0, count: nv)
        for t in 0..<chunkCount { for i in 0..<nv { gradValues[i] += dwps[t][i] } }
        if let db = gradBias {
            for f in 0..<k {
                var sum: Float = 0
                for b in 0..<n { sum += vectorSum(dy + (b * k + f) * oh * ow, oh * ow) }
                db[f] = sum
            }
        }
    }
}

/// Σ a[i]·b[i], eight partial sums.
@inline(__always)
func vectorDot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
    var acc = SIMD8<Float>(repeating: 0)
    let ar = UnsafeRawPointer(a), br = UnsafeRawPointer(b)
    var i = 0
    while i + 8 <= n {
        acc.addProduct(ar.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self),
                       br.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self))
        i += 8
    }
    var s = acc.sum()
    while i < n { s += a[i] * b[i]; i += 1 }
    return s
}
