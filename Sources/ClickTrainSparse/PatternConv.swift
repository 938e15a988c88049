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

    /// - Parameter weight: [K, C, 3, 3]; zeros are dropped (a kernel with no non-zero is
    ///   removed, as connectivity pruning does).
    public init(weight: Tensor) {
        precondition(weight.rank == 4 && weight.shape[2] == 3 && weight.shape[3] == 3,
                     "PatternWeights: weight \(weight.shape), expected [K, C, 3, 3]")
        outChannels = weight.shape[0]
        inChannels = weight.shape[1]
        var rs: [Int32] = [0], ch: [Int32] = [], ts: [Int32] = [0], tp: [UInt8] = [], vs: [Float] = []
        ch.reserveCapacity(outChannels * inChannels)
        for f in 0..<outChannels {
            // Group the filter's kernels by pattern (bitmask of kept taps).
            var kernels: [(UInt16, Int)] = []
            for c in 0..<inChannels {
                var bits: UInt16 = 0
                for t in 0..<9 where weight[(f * inChannels + c) * 9 + t] != 0 { bits |= 1 << t }
                if bits != 0 { kernels.append((bits, c)) }
            }
            kernels.sort { $0.0 != $1.0 ? $0.0 < $1.0 : $0.1 < $1.1 }
            for (bits, c) in kernels {
                ch.append(Int32(c))
                for t in 0..<9 where bits & (1 << t) != 0 {
                    tp.append(UInt8(t))
                    vs.append(weight[(f * inChannels + c) * 9 + t])
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
    }

    public var keptKernels: Int { channel.count }
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

    /// `output = conv(input, weights) + bias`; input [N, C, H, W], output [N, K, OH, OW].
    public func forward(input: Tensor, weights pw: PatternWeights, bias: Tensor?, output: Tensor) {
        let g = geometry
        precondition(input.shape == g.inputShape && output.shape == g.outputShape, "pattern conv forward: shapes")
        precondition(pw.outChannels == g.outChannels && pw.inChannels == g.inChannels, "pattern conv: weight shape")
        let n = g.batch, c = g.inChannels, k = g.outChannels, h = g.height, w = g.width
        let oh = g.outHeight, ow = g.outWidth
        let (rows, pitch, phases) = (self.rows, self.pitch, self.phases)
        let phasePlane = rows * pitch, plane = phasePlane * phases
        let xin = input.data, yout = output.data, bufs = padded.map(\.data), accs = accumulators.map(\.data)
        let chunkCount = chunks
        // Where tap t = (ky, kx) reads for the output at (0, 0), in the channel's planes.
        let tapOffset: [Int] = (0..<9).map { t in
            let ky = t / 3, kx = t % 3
            return phases == 1 ? ky * pitch + kx : ((ky & 1) * 2 + (kx & 1)) * phasePlane + (ky >> 1) * pitch + (kx >> 1)
        }
        let span = (oh - 1) * pitch + ow
        pw.rowStart.withUnsafeBufferPointer { rs in
        pw.channel.withUnsafeBufferPointer { ch in
        pw.tapStart.withUnsafeBufferPointer { ts in
        pw.tap.withUnsafeBufferPointer { tp in
        pw.value.withUnsafeBufferPointer { vs in
            Threads.parallelFor(chunkCount) { chunk in
                let xp = bufs[chunk], acc = accs[chunk]
                for b in (n * chunk / chunkCount)..<(n * (chunk + 1) / chunkCount) {
                    // Zero-padded copy of the image (split by parity for stride 2).
                    xp.update(repeating: 0, count: c * plane)
                    for ci in 0..<c {
                        let src = xin + (b * c + ci) * h * w, dst = xp + ci * plane
                        if phases == 1 {
                            for y in 0..<h { (dst + (y + 1) * pitch + 1).update(from: src + y * w, count: w) }
                        } else {
                            for y in 0..<h {
                                let py = y + 1
                                for x in 0..<w {
                                    let px = x + 1
                                    dst[((py & 1) * 2 + (px & 1)) * phasePlane + (py >> 1) * pitch + (px >> 1)] = src[y * w + x]
                                }
                            }
                        }
                    }
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
}
