import ClickTrainCore

/// A pattern-pruned 3x3 conv weight in a compact format (in the spirit of PatDNN's
/// filter-kernel-weight layout): per output channel, its kept input channels, each
/// with the tap offsets and values of its pattern, kernels of one filter grouped by
/// pattern. Built from the weight's non-zeros in one pass.
package struct PatternWeights: Sendable {
    package let outChannels: Int, inChannels: Int
    /// Kernels of filter f are entries rowStart[f]..<rowStart[f+1].
    package let rowStart: [Int32]
    /// Input channel of each kept kernel.
    package let channel: [Int32]
    /// Start of each kernel's taps in `tap`/`value` (kernels may keep different counts).
    package let tapStart: [Int32]
    /// Tap position 0…8 (row-major in the 3x3 window) and weight of every kept tap.
    package let tap: [UInt8]
    package private(set) var value: [Float]
    /// Index of each value in the dense [K, C, 3, 3] weight.
    package let position: [Int32]

    /// - Parameters:
    ///   - weight: [K, C, 3, 3].
    ///   - mask: which taps are kept (non-zero); without it, the weight's non-zeros. A
    ///     kernel with nothing kept is removed, as connectivity pruning does.
    package init(weight: Tensor, mask: Tensor? = nil) {
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
    package init(pointwise weight: Tensor, mask: Tensor? = nil) {
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

    package var keptKernels: Int { channel.count }

    /// The same structure with the values of `weight` at the kept positions (a training
    /// step after hard pruning changes the values, never the structure).
    package func refreshed(from weight: Tensor) -> PatternWeights {
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
    package func byInputChannel() -> (rowStart: [Int32], filter: [Int32], tapStart: [Int32], tap: [UInt8], valueIndex: [Int32]) {
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
    package var nonZeros: Int { value.count }

    /// The same weights with filter f's values multiplied by scale[f] (a batch norm folded
    /// into the convolution at inference).
    package func scaledPerFilter(_ scale: [Float]) -> PatternWeights {
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
    package func csr() -> (rowPtr: [Int32], column: [Int32], value: [Float]) {
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
    package func dense() -> Tensor {
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
