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
/// per-thread buffer, then every output row of a filter accumulates `w · (input row
/// shifted by the tap)` over the filter's kept kernels and taps, SIMD over the row.
public final class PatternConvKernel {
    public let geometry: ConvGeometry
    private let chunks: Int
    private let padded: [Tensor]
    private let accumulators: [Tensor]

    public static func supports(_ g: ConvGeometry) -> Bool {
        g.kernelSize == 3 && g.padding == 1 && (g.stride == 1 || g.stride == 2)
    }

    public init(_ g: ConvGeometry) {
        precondition(PatternConvKernel.supports(g), "pattern conv needs 3x3, padding 1, stride 1 or 2: \(g)")
        geometry = g
        chunks = max(1, min(Threads.count, g.batch))
        padded = (0..<chunks).map { _ in Tensor(shape: [g.inChannels, g.height + 2, g.width + 2]) }
        accumulators = (0..<chunks).map { _ in Tensor(shape: [g.height * (g.width + 2)]) }
    }

    /// `output = conv(input, weights) + bias`; input [N, C, H, W], output [N, K, OH, OW].
    public func forward(input: Tensor, weights pw: PatternWeights, bias: Tensor?, output: Tensor) {
        let g = geometry
        precondition(input.shape == g.inputShape && output.shape == g.outputShape, "pattern conv forward: shapes")
        precondition(pw.outChannels == g.outChannels && pw.inChannels == g.inChannels, "pattern conv: weight shape")
        let n = g.batch, c = g.inChannels, k = g.outChannels, h = g.height, w = g.width
        let oh = g.outHeight, ow = g.outWidth, s = g.stride
        let pw2 = w + 2, plane = (h + 2) * pw2
        let xin = input.data, yout = output.data, bufs = padded.map(\.data), accs = accumulators.map(\.data)
        let chunkCount = chunks
        pw.rowStart.withUnsafeBufferPointer { rs in
        pw.channel.withUnsafeBufferPointer { ch in
        pw.tapStart.withUnsafeBufferPointer { ts in
        pw.tap.withUnsafeBufferPointer { tp in
        pw.value.withUnsafeBufferPointer { vs in
            // Offsets of the 9 taps in the padded image, for an output at (0, 0).
            let tapOffset = (0..<9).map { ($0 / 3) * pw2 + $0 % 3 }
            Threads.parallelFor(chunkCount) { chunk in
                let xp = bufs[chunk]
                for b in (n * chunk / chunkCount)..<(n * (chunk + 1) / chunkCount) {
                    // Zero-padded copy of the image.
                    for ci in 0..<c {
                        let dst = xp + ci * plane, src = xin + (b * c + ci) * h * w
                        dst.update(repeating: 0, count: pw2)
                        for y in 0..<h {
                            let row = dst + (y + 1) * pw2
                            row[0] = 0
                            (row + 1).update(from: src + y * w, count: w)
                            row[w + 1] = 0
                        }
                        (dst + (h + 1) * pw2).update(repeating: 0, count: pw2)
                    }
                    let acc = accs[chunk]
                    let span = (oh - 1) * pw2 + ow  // stride 1: the output on the padded grid
                    for f in 0..<k {
                        let yf = yout + (b * k + f) * oh * ow
                        let b0: Float = bias?[f] ?? 0
                        if s == 1 {
                            // One contiguous loop per tap over the padded grid (its two pad
                            // columns per row are computed and dropped): no per-row overhead,
                            // which matters for 16x16 and 8x8 maps.
                            acc.update(repeating: b0, count: span)
                            for e in Int(rs[f])..<Int(rs[f + 1]) {
                                let xc = xp + Int(ch[e]) * plane
                                for i in Int(ts[e])..<Int(ts[e + 1]) {
                                    let wv = vs[i]
                                    let src = xc + tapOffset[Int(tp[i])]
                                    for j in 0..<span { acc[j] += wv * src[j] }
                                }
                            }
                            for oy in 0..<oh { (yf + oy * ow).update(from: acc + oy * pw2, count: ow) }
                            continue
                        }
                        yf.update(repeating: b0, count: oh * ow)
                        for e in Int(rs[f])..<Int(rs[f + 1]) {
                            let xc = xp + Int(ch[e]) * plane
                            for i in Int(ts[e])..<Int(ts[e + 1]) {
                                let wv = vs[i]
                                let base = xc + tapOffset[Int(tp[i])]
                                do {
                                    for oy in 0..<oh {
                                        let src = base + oy * s * pw2, dst = yf + oy * ow
                                        for ox in 0..<ow { dst[ox] += wv * src[ox * s] }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        } } } } }
    }
}
