/// Scoring and choosing, separate from scheduling (Torch-Pruning's importance / pruner /
/// step split). Every function here works on an importance map `S` of a 3x3 conv
/// weight, [F, C, 3, 3] flattened, with S = Σ over recent steps of (W ⊙ G)² (ClickTrain)
/// or W² (magnitude, prune-after-training).
public enum PatternSelection {
    /// Importance a pattern keeps of kernel `k`: I_p = Σ_{i ∈ p} S[k, i].
    @inlinable
    public static func kept(_ s: UnsafePointer<Float>, kernel k: Int, _ p: Pattern) -> Float {
        var acc: Float = 0
        let base = s + k * 9
        for i in 0..<9 where p.contains(i) { acc += base[i] }
        return acc
    }

    /// The kernel's own best pattern of n positions: its top-n importance positions
    /// (ties go to the lower position).
    public static func preferredPattern(_ s: UnsafePointer<Float>, kernel k: Int, n: Int) -> Pattern {
        let base = s + k * 9
        let order = (0..<9).sorted { base[$0] != base[$1] ? base[$0] > base[$1] : $0 < $1 }
        return Pattern(positions: Array(order.prefix(n)))
    }

    /// Dynamic pool generation (ClickTrain's stage 2): count each kernel's preferred
    /// pattern, keep the `candidates` most frequent, then choose `size` of them greedily,
    /// each time the one that adds the most importance when every kernel takes its best
    /// pattern among those chosen.
    /// - Parameters:
    ///   - maps: importance maps with their kernel counts (one layer, or the network).
    ///   - n: weights per pattern.
    ///   - size: patterns in the pool (K).
    ///   - candidates: the most frequent preferred patterns considered (default: all).
    public static func dynamicPool(_ maps: [(UnsafePointer<Float>, Int)], n: Int, size: Int, candidates: Int? = nil)
        -> [Pattern]
    {
        precondition(size >= 1 && n >= 1 && n <= 9, "dynamicPool: size \(size), n \(n)")
        var freq: [Pattern: Int] = [:]
        for (s, kernels) in maps { for k in 0..<kernels { freq[preferredPattern(s, kernel: k, n: n), default: 0] += 1 } }
        let ranked = freq.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key.bits < $1.key.bits }.map(\.key)
        var cands = Array(ranked.prefix(candidates ?? max(2 * size, 8)))
        // Too few distinct preferred patterns (tiny layers): fill from the generic pools.
        for p in GenericPools.twelve where cands.count < size && p.count == n && !cands.contains(p) { cands.append(p) }
        var chosen: [Pattern] = []
        var best: [[Float]] = maps.map { [Float](repeating: 0, count: $0.1) }
        while chosen.count < min(size, cands.count) {
            var bestGain: Float = -1, bestP = cands[0]
            for p in cands where !chosen.contains(p) {
                var gain: Float = 0
                for (m, (s, kernels)) in maps.enumerated() {
                    for k in 0..<kernels { gain += max(0, kept(s, kernel: k, p) - best[m][k]) }
                }
                if gain > bestGain { bestGain = gain; bestP = p }
            }
            chosen.append(bestP)
            for (m, (s, kernels)) in maps.enumerated() {
                for k in 0..<kernels { best[m][k] = max(best[m][k], kept(s, kernel: k, bestP)) }
            }
        }
        return chosen
    }

    /// Pattern assignment: each kernel takes argmax_p I_p over `pool` (first wins ties).
    /// Returns pool indices, one per kernel.
    public static func assign(_ s: UnsafePointer<Float>, kernels: Int, pool: [Pattern]) -> [UInt8] {
        precondition(!pool.isEmpty && pool.count < 256, "assign: pool of \(pool.count)")
        return (0..<kernels).map { k in
            var bi = 0
            var bv = kept(s, kernel: k, pool[0])
            for (i, p) in pool.enumerated().dropFirst() {
                let v = kept(s, kernel: k, p)
                if v > bv { bv = v; bi = i }
            }
            return UInt8(bi)
        }
    }

    /// Connectivity pruning: the `ratio` fraction of kernels with the least total
    /// importance Σ_i S[k, i] (a top-k over all F×C kernels of the layer). Returns one
    /// flag per kernel, true = removed.
    public static func removedKernels(_ s: UnsafePointer<Float>, kernels: Int, ratio: Double) -> [Bool] {
        precondition(ratio >= 0 && ratio <= 1, "removedKernels: ratio \(ratio)")
        let remove = Int((Double(kernels) * ratio).rounded())
        let totals = (0..<kernels).map { k in (0..<9).reduce(Float(0)) { $0 + s[k * 9 + $1] } }
        let order = (0..<kernels).sorted { totals[$0] != totals[$1] ? totals[$0] < totals[$1] : $0 < $1 }
        var out = [Bool](repeating: false, count: kernels)
        for k in order.prefix(remove) { out[k] = true }
        return out
    }
}
