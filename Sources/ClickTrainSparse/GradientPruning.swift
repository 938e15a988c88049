import ClickTrainCore
import Foundation

/// Which distribution the threshold is fitted to.
public enum GradientDistribution: String, Sendable, Codable, CaseIterable {
    /// Zero-mean normal, σ̂ = sqrt(π/2)·mean|g| (Ye et al., ECCV'20).
    case gaussian
    /// |g| log-normal, fitted to the mean and deviation of log|g| (Chmiel et al., ICLR'21).
    case lognormal
}

/// How the target rate p sets the threshold τ.
public enum ThresholdRule: String, Sendable, Codable, CaseIterable {
    /// The paper's rule: p of the fitted distribution lies below τ, e.g. Gaussian
    /// τ = Φ⁻¹((1+p)/2)·σ̂. The stochastic rule then keeps some of those entries as ±τ, so
    /// the zeros are fewer than p (about 0.54 at p = 0.9 on Gaussian data).
    case paper
    /// τ chosen so the *expected fraction of zeros after the stochastic rule* under the
    /// fitted distribution is p: the achieved sparsity is the target.
    case calibrated
}

/// Stochastic, unbiased pruning of activation gradients (Ye et al., ECCV'20): entries with |g| < τ
/// become sign(g)·τ with probability |g|/τ and 0 otherwise; larger entries pass.
///
/// The random numbers come from a counter-based hash of (seed, call, element), so the
/// result does not depend on the thread count and needs no per-element system call.
public struct GradientPruner: Sendable {
    public var rate: Double
    public var distribution: GradientDistribution
    public var rule: ThresholdRule
    public var seed: UInt64

    public init(rate: Double, distribution: GradientDistribution = .gaussian, rule: ThresholdRule = .calibrated,
                seed: UInt64 = 0) {
        precondition(rate >= 0 && rate < 1, "gradient pruning rate must be in [0, 1), got \(rate)")
        self.rate = rate
        self.distribution = distribution
        self.rule = rule
        self.seed = seed
    }

    /// The threshold for `g` (count elements at `p`).
    public func threshold(_ g: UnsafePointer<Float>, count n: Int) -> Float {
        if rate == 0 || n == 0 { return 0 }
        switch distribution {
        case .gaussian:
            let s = Threads.parallelSum(n) { r in Double(vectorSumAbs(g + r.lowerBound, r.count)) } ?? 0
            let sigma = (Double.pi / 2).squareRoot() * s / Double(n)
            if sigma == 0 { return 0 }
            let t = rule == .paper ? inverseNormalCDF((1 + rate) / 2) : GradientPruner.calibratedGaussian(rate)
            return Float(t * sigma)
        case .lognormal:
            // Fit on up to 65536 evenly spaced entries (a log per element of every tensor
            // would cost more than the pruning saves). Exact zeros stay zeros and count.
            let stride = max(1, n / 65536)
            var logs: [Double] = []
            logs.reserveCapacity(n / stride + 1)
            var zeros = 0, seen = 0
            var i = 0
            while i < n {
                let a = abs(g[i])
                seen += 1
                if a > 0 { logs.append(log(Double(a))) } else { zeros += 1 }
                i += stride
            }
            let z0 = Double(zeros) / Double(seen)
            if logs.count < 2 || z0 >= rate { return 0 }
            let mu = logs.reduce(0, +) / Double(logs.count)
            let sd = (logs.reduce(0) { $0 + ($1 - mu) * ($1 - mu) } / Double(logs.count - 1)).squareRoot()
            let p = (rate - z0) / (1 - z0)
            if sd == 0 { return Float(exp(mu)) * 1.0001 }
            let z = rule == .paper ? inverseNormalCDF(p) : GradientPruner.calibratedLogNormal(p, sd: sd)
            return Float(exp(mu + sd * z))
        }
    }

    /// Expected fraction of zeros for a normal distribution and τ = t·σ.
    static func gaussianZeros(_ t: Double) -> Double {
        (2 * normalCDF(t) - 1) - 2 * (normalPDF(0) - normalPDF(t)) / t
    }

    /// t with gaussianZeros(t) = p (bisection; the function increases with t).
    static func calibratedGaussian(_ p: Double) -> Double {
        var lo = 1e-9, hi = 60.0
        for _ in 0..<100 {
            let m = (lo + hi) / 2
            if gaussianZeros(m) < p { lo = m } else { hi = m }
        }
        return (lo + hi) / 2
    }

    /// z with the expected zero fraction p for log-normal |g| and τ = exp(μ + sd·z):
    /// Φ(z) − exp(sd²/2 − sd·z)·Φ(z − sd) = p.
    static func calibratedLogNormal(_ p: Double, sd: Double) -> Double {
        func zeros(_ z: Double) -> Double { normalCDF(z) - exp(sd * sd / 2 - sd * z) * normalCDF(z - sd) }
        var lo = -40.0, hi = 40.0
        for _ in 0..<120 {
            let m = (lo + hi) / 2
            if zeros(m) < p { lo = m } else { hi = m }
        }
        return (lo + hi) / 2
    }

    /// The random stream of one pruning call (use a new `call` for every tensor and step).
    public func streamKey(call: UInt64) -> UInt32 {
        UInt32(truncatingIfNeeded: ((seed &* 0x9E37_79B9_7F4A_7C15) ^ (call &* 0xD1B5_4A32_D192_ED03)) >> 17)
    }

    /// The uniform number in [0, 1) that element `index` draws in stream `key`: a
    /// counter-based hash, identical in the SIMD loop below and in fused kernels.
    @inline(__always)
    public static func uniform(index: Int, key: UInt32) -> Float {
        var h = UInt32(truncatingIfNeeded: index) &+ key
        h = (h ^ (h >> 16)) &* 0x7FEB_352D
        h = (h ^ (h >> 15)) &* 0x846C_A68B
        h ^= h >> 16
        return Float(h >> 8) * (1 / 16_777_216 as Float)
    }

    /// Prunes `src` into `dst` (they may be the same buffer) with threshold `tau`; `call`
    /// selects the random stream (use a new value for every tensor and step). Returns the
    /// number of zeros in `dst`.
    @discardableResult
    public func apply(_ src: UnsafePointer<Float>, into dst: UnsafeMutablePointer<Float>, count n: Int, tau: Float,
                      call: UInt64) -> Int {
        let key = streamKey(call: call)
        let zeros = Threads.parallelSum(n, minPerChunk: 1 << 14) { r -> Double in
            Double(applyRange(src + r.lowerBound, into: dst + r.lowerBound, count: r.count, tau: tau, key: key,
                              indexBase: r.lowerBound))
        }
        return Int(zeros ?? 0)
    }

    /// The pruning rule on `count` elements that are elements `indexBase…` of the tensor
    /// (the index picks each element's random number). One thread. Returns the zeros.
    @inline(__always)
    public func applyRange(_ src: UnsafePointer<Float>, into dst: UnsafeMutablePointer<Float>, count: Int, tau: Float,
                           key: UInt32, indexBase: Int) -> Int {
        let src = src - indexBase, dst = dst - indexBase
        let r = indexBase..<(indexBase + count)
        do {
            // Eight lanes at a time: hash → uniform u, then select x, ±τ or 0.
            let tauV = SIMD8<Float>(repeating: tau), zero = SIMD8<Float>(repeating: 0)
            let lane = SIMD8<UInt32>(0, 1, 2, 3, 4, 5, 6, 7)
            var z = SIMD8<Int32>(repeating: 0)
            var i = r.lowerBound
            while i + 8 <= r.upperBound {
                let x = UnsafeRawPointer(src + i).loadUnaligned(as: SIMD8<Float>.self)
                var h = SIMD8<UInt32>(repeating: UInt32(truncatingIfNeeded: i) &+ key) &+ lane
                h = (h ^ (h &>> 16)) &* 0x7FEB_352D
                h = (h ^ (h &>> 15)) &* 0x846C_A68B
                h ^= h &>> 16
                let u = SIMD8<Float>(h &>> 8) * (1 / 16_777_216 as Float)
                let bits = unsafeBitCast(x, to: SIMD8<UInt32>.self)
                let a = unsafeBitCast(bits & 0x7FFF_FFFF, to: SIMD8<Float>.self)
                let signedTau = unsafeBitCast((bits & 0x8000_0000) | unsafeBitCast(tauV, to: SIMD8<UInt32>.self),
                                              to: SIMD8<Float>.self)
                let small = a .< tauV
                let keep = u * tauV .< a
                var y = x
                y.replace(with: zero, where: small)
                y.replace(with: signedTau, where: small .& keep)
                UnsafeMutableRawPointer(dst + i).storeBytes(of: y, as: SIMD8<Float>.self)
                z.replace(with: z &+ 1, where: y .== zero)
                i += 8
            }
            var zs = Int(z.wrappedSum())
            while i < r.upperBound {
                let x = src[i]
                let a = abs(x)
                let u = GradientPruner.uniform(index: i, key: key)
                let y: Float = a < tau ? (u * tau < a ? (x < 0 ? -tau : tau) : 0) : x
                dst[i] = y
                zs += y == 0 ? 1 : 0
                i += 1
            }
            return zs
        }
    }
}
