/// Batch normalisation over N, H, W for each channel of an NCHW tensor.
///
/// Training: normalise with the batch statistics, save mean and 1/σ for backward,
/// and update the running statistics as PyTorch does (momentum 0.1, unbiased
/// variance). Evaluation: normalise with the running statistics. With `relu`, `y` gets
/// max(·, 0) of the result (batch norm and a following ReLU in one pass).
package func batchNormForward(
    x: Tensor, gamma: Tensor, beta: Tensor, runningMean: Tensor, runningVar: Tensor,
    training: Bool, momentum: Float, eps: Float, y: Tensor, savedMean: Tensor, savedInvStd: Tensor, relu: Bool = false
) {
    let n = x.shape[0], c = x.shape[1], hw = x.count / max(n * c, 1)
    let m = n * hw
    let xp = x.data, yp = y.data
    Threads.parallelRanges(c) { range in
        for ch in range {
            var mean: Float, invStd: Float
            if training {
                // Per plane its mean, then (from cache) its squared deviations from it, merged
                // into the channel's running mean and M2 with Chan's formula: one pass over
                // memory for the statistics.
                var mu = 0.0, v = 0.0, seen = 0.0
                let size = Double(hw)
                for b in 0..<n {
                    let p = xp + (b * c + ch) * hw
                    let planeMean = Double(vectorSum(p, hw)) / size
                    let planeM2 = Double(vectorSumSquaredDeviation(p, hw, from: Float(planeMean)))
                    let d = planeMean - mu, total = seen + size
                    mu += d * size / total
                    v += planeM2 + d * d * seen * size / total
                    seen = total
                }
                let varBiased = v / Double(m)
                mean = Float(mu)
                invStd = Float(1.0 / (varBiased + Double(eps)).squareRoot())
                let unbiased = m > 1 ? varBiased * Double(m) / Double(m - 1) : varBiased
                runningMean.data[ch] = (1 - momentum) * runningMean.data[ch] + momentum * mean
                runningVar.data[ch] = (1 - momentum) * runningVar.data[ch] + momentum * Float(unbiased)
                savedMean.data[ch] = mean
                savedInvStd.data[ch] = invStd
            } else {
                mean = runningMean.data[ch]
                invStd = 1 / (runningVar.data[ch] + eps).squareRoot()
            }
            normalizeChannel(ch, x: xp, y: yp, n: n, c: c, hw: hw, mean: mean, invStd: invStd, gamma: gamma, beta: beta,
                             relu: relu)
        }
    }
}

/// `y = γ·(x − mean)·invStd + β` over one channel of an NCHW tensor, then max(·, 0) when `relu`.
@inline(__always)
private func normalizeChannel(_ ch: Int, x xp: UnsafeMutablePointer<Float>, y yp: UnsafeMutablePointer<Float>,
                              n: Int, c: Int, hw: Int, mean: Float, invStd: Float, gamma: Tensor, beta: Tensor,
                              relu: Bool) {
    let scale = gamma.data[ch] * invStd
    let shift = beta.data[ch] - mean * scale
    for b in 0..<n {
        let p = xp + (b * c + ch) * hw, q = yp + (b * c + ch) * hw
        if relu {
            for i in 0..<hw { q[i] = max(p[i] * scale + shift, 0) }
        } else {
            for i in 0..<hw { q[i] = p[i] * scale + shift }
        }
    }
}

/// Batch-norm backward in training mode (batch statistics):
/// `dx = γ/σ · (dy − mean(dy) − x̂ · mean(dy · x̂))`, `dγ = Σ dy · x̂`, `dβ = Σ dy`.
/// Gradients are overwritten. With `reluOutput` (the forward ran with `relu`), `dy` is the
/// gradient of the ReLU's output and is zero where that output is not positive.
package func batchNormBackward(
    x: Tensor, gamma: Tensor, savedMean: Tensor, savedInvStd: Tensor, gradOutput dy: Tensor,
    gradInput dx: Tensor, gradGamma: Tensor, gradBeta: Tensor, reluOutput: Tensor? = nil
) {
    let n = x.shape[0], c = x.shape[1], hw = x.count / max(n * c, 1)
    let m = Float(n * hw)
    let xp = x.data, dyp = dy.data, dxp = dx.data, yp = reluOutput?.data
    Threads.parallelRanges(c) { range in
        for ch in range {
            let mean = savedMean.data[ch], invStd = savedInvStd.data[ch]
            var sdy = 0.0, sdyx = 0.0
            for b in 0..<n {
                let off = (b * c + ch) * hw
                let (a1, a2) = vectorSumAndDot(dyp + off, xp + off, hw, xMinus: mean, mask: yp.map { $0 + off })
                sdy += Double(a1)
                sdyx += Double(a2)
            }
            let dbeta = Float(sdy), dgamma = Float(sdyx) * invStd
            gradBeta.data[ch] = dbeta
            gradGamma.data[ch] = dgamma
            let k = gamma.data[ch] * invStd
            let meanDy = dbeta / m
            let coef = dgamma / m * invStd  // mean(dy·x̂) / σ
            for b in 0..<n {
                let off = (b * c + ch) * hw
                applyBackward(x: xp + off, dy: dyp + off, mask: yp.map { $0 + off }, dx: dxp + off, hw, k: k,
                              meanDy: meanDy, mean: mean, coef: coef)
            }
        }
    }
}

/// `dx = k·(dy − meanDy − (x − mean)·coef)` over `count` values, `dy` zero where `mask` is
/// given and not positive.
@inline(__always)
private func applyBackward(x p: UnsafeMutablePointer<Float>, dy g: UnsafeMutablePointer<Float>, mask: UnsafeMutablePointer<Float>?,
                           dx o: UnsafeMutablePointer<Float>, _ count: Int, k: Float, meanDy: Float, mean: Float, coef: Float) {
    if let y = mask {
        for i in 0..<count { o[i] = k * ((y[i] > 0 ? g[i] : 0) - meanDy - (p[i] - mean) * coef) }
    } else {
        for i in 0..<count { o[i] = k * (g[i] - meanDy - (p[i] - mean) * coef) }
    }
}

/// Batch-norm backward in evaluation mode (running statistics are constants):
/// `dx = dy · γ / sqrt(running_var + eps)`. Used for fine-tuning with frozen statistics
/// and by gradient checks. `reluOutput` as in `batchNormBackward`.
package func batchNormBackwardEval(gamma: Tensor, runningVar: Tensor, eps: Float, gradOutput dy: Tensor,
                                  gradInput dx: Tensor, reluOutput: Tensor? = nil) {
    let n = dy.shape[0], c = dy.shape[1], hw = dy.count / max(n * c, 1)
    for b in 0..<n {
        for ch in 0..<c {
            let k = gamma.data[ch] / (runningVar.data[ch] + eps).squareRoot()
            let off = (b * c + ch) * hw
            let g = dy.data + off, o = dx.data + off
            if let y = reluOutput?.data {
                for i in 0..<hw { o[i] = (y[off + i] > 0 ? g[i] : 0) * k }
            } else {
                for i in 0..<hw { o[i] = g[i] * k }
            }
        }
    }
}

/// Synchronised batch norm in training mode: the statistics are those of the batch of all
/// the ranks of `group` together, so the result equals one process normalising the whole
/// batch. Two allreduces of `c + 1` doubles: the sums and the element count, then the
/// squared deviations from the global mean.
package func batchNormForwardSynced(
    x: Tensor, gamma: Tensor, beta: Tensor, runningMean: Tensor, runningVar: Tensor, momentum: Float, eps: Float,
    y: Tensor, savedMean: Tensor, savedInvStd: Tensor, group: any ProcessGroup, relu: Bool = false
) {
    let n = x.shape[0], c = x.shape[1], hw = x.count / max(n * c, 1)
    let xp = x.data, yp = y.data
    var sums = [Double](repeating: 0, count: c + 1)
    sums[c] = Double(n * hw)
    var m = 0.0
    sums.withUnsafeMutableBufferPointer { s in
        let sp = UncheckedSendable(s.baseAddress!)
        Threads.parallelRanges(c) { range in
            for ch in range {
                var t = 0.0
                for b in 0..<n { t += Double(vectorSum(xp + (b * c + ch) * hw, hw)) }
                sp.value[ch] = t
            }
        }
        group.allreduceSum(s)
        m = s[c]
        let total = m
        Threads.parallelRanges(c) { range in
            for ch in range {
                let mu = Float(sp.value[ch] / total)
                var v = 0.0
                for b in 0..<n { v += Double(vectorSumSquaredDeviation(xp + (b * c + ch) * hw, hw, from: mu)) }
                savedMean.data[ch] = mu
                sp.value[ch] = v
            }
        }
        group.allreduceSum(UnsafeMutableBufferPointer(rebasing: s[0..<c]))
    }
    let count = m
    Threads.parallelRanges(c) { range in
        for ch in range {
            let varBiased = sums[ch] / count, mean = savedMean.data[ch]
            let invStd = Float(1.0 / (varBiased + Double(eps)).squareRoot())
            let unbiased = count > 1 ? varBiased * count / (count - 1) : varBiased
            runningMean.data[ch] = (1 - momentum) * runningMean.data[ch] + momentum * mean
            runningVar.data[ch] = (1 - momentum) * runningVar.data[ch] + momentum * Float(unbiased)
            savedInvStd.data[ch] = invStd
            normalizeChannel(ch, x: xp, y: yp, n: n, c: c, hw: hw, mean: mean, invStd: invStd, gamma: gamma, beta: beta,
                             relu: relu)
        }
    }
}

/// Backward of `batchNormForwardSynced`: the means of `dy` and `dy·x̂` in `dx` are over the
/// whole batch of all ranks (one allreduce of `2c + 1` doubles, the count included); `dγ` and `dβ` are this rank's
/// sums, which the gradient exchange then averages like every other parameter gradient.
package func batchNormBackwardSynced(
    x: Tensor, gamma: Tensor, savedMean: Tensor, savedInvStd: Tensor, gradOutput dy: Tensor,
    gradInput dx: Tensor, gradGamma: Tensor, gradBeta: Tensor, group: any ProcessGroup, reluOutput: Tensor? = nil
) {
    let n = x.shape[0], c = x.shape[1], hw = x.count / max(n * c, 1)
    let xp = x.data, dyp = dy.data, dxp = dx.data, yp = reluOutput?.data
    var sums = [Double](repeating: 0, count: 2 * c + 1)
    sums[2 * c] = Double(n * hw)
    sums.withUnsafeMutableBufferPointer { s in
        let sp = UncheckedSendable(s.baseAddress!)
        Threads.parallelRanges(c) { range in
            for ch in range {
                let mean = savedMean.data[ch]
                var sdy = 0.0, sdyx = 0.0
                for b in 0..<n {
                    let off = (b * c + ch) * hw
                    let (a1, a2) = vectorSumAndDot(dyp + off, xp + off, hw, xMinus: mean, mask: yp.map { $0 + off })
                    sdy += Double(a1)
                    sdyx += Double(a2)
                }
                gradBeta.data[ch] = Float(sdy)
                gradGamma.data[ch] = Float(sdyx) * savedInvStd.data[ch]
                sp.value[2 * ch] = sdy
                sp.value[2 * ch + 1] = sdyx
            }
        }
        group.allreduceSum(s)
    }
    let m = Float(sums[2 * c])
    Threads.parallelRanges(c) { range in
        for ch in range {
            let mean = savedMean.data[ch], invStd = savedInvStd.data[ch]
            let k = gamma.data[ch] * invStd
            let meanDy = Float(sums[2 * ch]) / m
            let coef = Float(sums[2 * ch + 1]) * invStd / m * invStd
            for b in 0..<n {
                let off = (b * c + ch) * hw
                applyBackward(x: xp + off, dy: dyp + off, mask: yp.map { $0 + off }, dx: dxp + off, hw, k: k,
                              meanDy: meanDy, mean: mean, coef: coef)
            }
        }
    }
}
