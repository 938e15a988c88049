/// Batch norm on channel-blocked activations ([N, C/B, H, W, B], B = 8 or 16, see
/// `ChannelBlocking`): the computation of the NCHW kernels, eight channels per vector.
/// Work is split over the (image, channel block) planes, each H·W·B contiguous floats;
/// per-plane partial sums are added in image order, so results do not depend on the
/// thread count. With a `group`, the statistics are those of all ranks' batches together
/// (synchronised batch norm, as `batchNormForwardSynced`).

private typealias F8 = SIMD8<Float>

@inline(__always) private func load(_ p: UnsafePointer<Float>) -> F8 { UnsafeRawPointer(p).loadUnaligned(as: F8.self) }
@inline(__always) private func store(_ v: F8, _ p: UnsafeMutablePointer<Float>) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: F8.self)
}

/// The planes of a blocked [N, C, H, W] tensor.
private struct Planes {
    let n, blocks, hw, block: Int
    init(_ t: Tensor) {
        block = t.channelBlock
        n = t.shape[0]
        blocks = t.shape[1] / block
        hw = t.shape[2] * t.shape[3]
    }
    var count: Int { n * blocks }
    var size: Int { hw * block }
    /// The eight channels of half-block `h` of `plane`, as a vector of per-channel values.
    @inline(__always) func lanes(_ v: [Float], _ plane: Int, _ h: Int) -> F8 {
        v.withUnsafeBufferPointer { load($0.baseAddress! + (plane % blocks) * block + h * 8) }
    }
}

/// Per-channel sums of two quantities, `body(plane, half)` giving one plane's eight lanes
/// of each, as [first sums (C), second sums (C)] in Double. With `moments`, the body gives a
/// plane's sum and its squared deviations from the plane's mean, and the second results are
/// each channel's squared deviations from its mean over all planes (Chan's combination).
@inline(__always)
private func channelSums(_ g: Planes, moments: Bool = false, _ body: (Int, Int) -> (F8, F8)) -> [Double] {
    let c = g.blocks * g.block
    var partial = [Float](repeating: 0, count: g.count * 2 * g.block)
    partial.withUnsafeMutableBufferPointer { pp in
        let out = UncheckedSendable(pp.baseAddress!)
        Threads.parallelRanges(g.count) { r in
            for plane in r {
                for h in 0..<(g.block / 8) {
                    let (a, b) = body(plane, h)
                    store(a, out.value + plane * 2 * g.block + h * 8)
                    store(b, out.value + plane * 2 * g.block + g.block + h * 8)
                }
            }
        }
    }
    var sums = [Double](repeating: 0, count: 2 * c)
    for plane in 0..<g.count {
        let ch0 = (plane % g.blocks) * g.block
        for l in 0..<g.block {
            sums[ch0 + l] += Double(partial[plane * 2 * g.block + l])
            if !moments { sums[c + ch0 + l] += Double(partial[plane * 2 * g.block + g.block + l]) }
        }
    }
    if moments {
        let hw = Double(g.hw), count = Double(g.n) * hw
        for plane in 0..<g.count {
            let ch0 = (plane % g.blocks) * g.block
            for l in 0..<g.block {
                let d = Double(partial[plane * 2 * g.block + l]) / hw - sums[ch0 + l] / count
                sums[c + ch0 + l] += Double(partial[plane * 2 * g.block + g.block + l]) + hw * d * d
            }
        }
    }
    return sums
}

/// `out = in · scale + shift` per channel over every plane, then max(·, 0) when `relu`;
/// `in` taken as 0 where `mask` is given and not positive.
private func scaleShift(_ g: Planes, _ src: UnsafeMutablePointer<Float>, _ dst: UnsafeMutablePointer<Float>,
                        scale: [Float], shift: [Float], relu: Bool = false, mask: UnsafeMutablePointer<Float>? = nil) {
    let zero = F8()
    Threads.parallelRanges(g.count) { r in
        for plane in r {
            for h in 0..<(g.block / 8) {
                let s = g.lanes(scale, plane, h), t = g.lanes(shift, plane, h)
                let off = plane * g.size + h * 8
                let p = src + off, q = dst + off
                for i in 0..<g.hw {
                    var v = load(p + i * g.block)
                    if let mask { v.replace(with: zero, where: .!(load(mask + off + i * g.block) .> zero)) }
                    v = v * s + t
                    if relu { v.replace(with: zero, where: v .< zero) }
                    store(v, q + i * g.block)
                }
            }
        }
    }
}

/// Training or evaluation forward on blocked `x` (see `batchNormForward`).
package func blockedBatchNormForward(
    x: Tensor, gamma: Tensor, beta: Tensor, runningMean: Tensor, runningVar: Tensor, training: Bool,
    momentum: Float, eps: Float, y: Tensor, savedMean: Tensor, savedInvStd: Tensor, group: (any ProcessGroup)?,
    relu: Bool = false
) {
    let g = Planes(x), c = x.shape[1], xp = x.data
    var mean = [Float](repeating: 0, count: c), invStd = [Float](repeating: 0, count: c)
    if training {
        // One pass over memory: each plane's sum, then (from the cache) its squared
        // deviations from its own mean; combined per channel in Double.
        var sums = channelSums(g, moments: true) { plane, h in
            let p = xp + plane * g.size + h * 8
            var a = F8(), b = F8()
            var i = 0
            while i + 1 < g.hw { a += load(p + i * g.block); b += load(p + (i + 1) * g.block); i += 2 }
            if i < g.hw { a += load(p + i * g.block) }
            let sum = a + b, m = sum / Float(g.hw)
            var q = F8()
            for i in 0..<g.hw { let d = load(p + i * g.block) - m; q.addProduct(d, d) }
            return (sum, q)
        }
        var count = Double(g.n * g.hw)
        if let group {
            // Over the ranks: Σ x² = Σ (deviations + sum² / count) per rank.
            var all = sums + [count]
            for ch in 0..<c { all[c + ch] += sums[ch] * sums[ch] / count }
            all.withUnsafeMutableBufferPointer { group.allreduceSum($0) }
            count = all[2 * c]
            for ch in 0..<c {
                sums[ch] = all[ch]
                sums[c + ch] = max(all[c + ch] - all[ch] * all[ch] / count, 0)
            }
        }
        for ch in 0..<c { mean[ch] = Float(sums[ch] / count) }
        for ch in 0..<c {
            let varBiased = sums[c + ch] / count
            invStd[ch] = Float(1.0 / (varBiased + Double(eps)).squareRoot())
            let unbiased = count > 1 ? varBiased * count / (count - 1) : varBiased
            runningMean.data[ch] = (1 - momentum) * runningMean.data[ch] + momentum * mean[ch]
            runningVar.data[ch] = (1 - momentum) * runningVar.data[ch] + momentum * Float(unbiased)
            savedMean.data[ch] = mean[ch]
            savedInvStd.data[ch] = invStd[ch]
        }
    } else {
        for ch in 0..<c {
            mean[ch] = runningMean.data[ch]
            invStd[ch] = 1 / (runningVar.data[ch] + eps).squareRoot()
        }
    }
    var scale = [Float](repeating: 0, count: c), shift = [Float](repeating: 0, count: c)
    for ch in 0..<c {
        scale[ch] = gamma.data[ch] * invStd[ch]
        shift[ch] = beta.data[ch] - mean[ch] * scale[ch]
    }
    scaleShift(g, xp, y.data, scale: scale, shift: shift, relu: relu)
    y.channelBlock = x.channelBlock
}

/// Training backward on blocked tensors (see `batchNormBackward`; with a `group`, the
/// means in `dx` are over all ranks and `dγ`, `dβ` are this rank's, as
/// `batchNormBackwardSynced`). With `reluBeta` (the forward applied ReLU; β of that
/// forward) the gradient is zero where the forward's pre-ReLU output x·scale + shift was not
/// positive: recomputed from `x` with the forward's own operations, so the mask is the one
/// the ReLU applied, without reading the output.
package func blockedBatchNormBackward(
    x: Tensor, gamma: Tensor, savedMean: Tensor, savedInvStd: Tensor, gradOutput dy: Tensor, gradInput dx: Tensor,
    gradGamma: Tensor, gradBeta: Tensor, group: (any ProcessGroup)?, reluBeta: Tensor? = nil
) {
    precondition(dy.channelBlock == x.channelBlock, "batch norm backward: gradient and input layouts differ")
    let g = Planes(x), c = x.shape[1], xp = x.data, gp = dy.data, relu = reluBeta != nil
    let zero = F8()
    let mean = Array(UnsafeBufferPointer(start: savedMean.data, count: c))
    let invStd = Array(UnsafeBufferPointer(start: savedInvStd.data, count: c))
    var scale = [Float](repeating: 0, count: c), shift = scale
    if let beta = reluBeta {
        for ch in 0..<c {
            scale[ch] = gamma.data[ch] * invStd[ch]
            shift[ch] = beta.data[ch] - mean[ch] * scale[ch]
        }
    }
    /// The incoming gradient at `off`, zero where the ReLU's input was not positive.
    @inline(__always) func grad(_ off: Int, _ s: F8, _ t: F8) -> F8 {
        var d = load(gp + off)
        if relu { d.replace(with: zero, where: .!(load(xp + off) * s + t .> zero)) }
        return d
    }
    var sums = channelSums(g) { plane, h in
        let base = plane * g.size + h * 8, m = g.lanes(mean, plane, h)
        let s = g.lanes(scale, plane, h), t = g.lanes(shift, plane, h)
        var a = F8(), b = F8()
        for i in 0..<g.hw {
            let d = grad(base + i * g.block, s, t)
            a += d
            b.addProduct(d, load(xp + base + i * g.block) - m)
        }
        return (a, b)
    }
    for ch in 0..<c {
        gradBeta.data[ch] = Float(sums[ch])
        gradGamma.data[ch] = Float(sums[c + ch]) * invStd[ch]
    }
    var count = Double(g.n * g.hw)
    if let group {
        sums.append(count)
        sums.withUnsafeMutableBufferPointer { group.allreduceSum($0) }
        count = sums[2 * c]
    }
    let m = Float(count)
    var k = [Float](repeating: 0, count: c), meanDy = k, coef = k
    for ch in 0..<c {
        k[ch] = gamma.data[ch] * invStd[ch]
        meanDy[ch] = Float(sums[ch]) / m
        coef[ch] = Float(sums[c + ch]) * invStd[ch] / m * invStd[ch]
    }
    let dp = dx.data
    Threads.parallelRanges(g.count) { r in
        for plane in r {
            for h in 0..<(g.block / 8) {
                let kv = g.lanes(k, plane, h), md = g.lanes(meanDy, plane, h), cv = g.lanes(coef, plane, h)
                let mv = g.lanes(mean, plane, h)
                let s = g.lanes(scale, plane, h), t = g.lanes(shift, plane, h)
                let off = plane * g.size + h * 8
                for i in 0..<g.hw {
                    let j = off + i * g.block
                    store(kv * (grad(j, s, t) - md - (load(xp + j) - mv) * cv), dp + j)
                }
            }
        }
    }
    dx.channelBlock = x.channelBlock
}

/// Evaluation-mode backward on blocked tensors: `dx = dy · γ / sqrt(running_var + eps)`
/// (`reluOutput` as in `batchNormBackward`).
package func blockedBatchNormBackwardEval(gamma: Tensor, runningVar: Tensor, eps: Float, gradOutput dy: Tensor,
                                         gradInput dx: Tensor, reluOutput: Tensor? = nil) {
    let c = dy.shape[1]
    var k = [Float](repeating: 0, count: c)
    for ch in 0..<c { k[ch] = gamma.data[ch] / (runningVar.data[ch] + eps).squareRoot() }
    scaleShift(Planes(dy), dy.data, dx.data, scale: k, shift: [Float](repeating: 0, count: c), mask: reluOutput?.data)
    dx.channelBlock = dy.channelBlock
}
