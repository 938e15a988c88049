import ClickTrainCore
import ClickTrainSparse
import ClickTrainTestSupport
import Foundation
import Testing

func gaussian(_ n: Int, seed: UInt64, sigma: Float = 1) -> Tensor {
    var rng = RNG(seed: seed)
    let t = Tensor(shape: [n])
    for i in 0..<n { t[i] = rng.normal() * sigma }
    return t
}

func logNormal(_ n: Int, seed: UInt64, mu: Float, sd: Float) -> Tensor {
    var rng = RNG(seed: seed)
    let t = Tensor(shape: [n])
    for i in 0..<n { t[i] = exp(mu + sd * rng.normal()) * (rng.next() & 1 == 0 ? 1 : -1) }
    return t
}

@Suite("Activation-gradient pruning")
struct GradientPruningTests {
    @Test func inverseNormalCDFMatchesTables() {
        // Values from statistical tables (scipy.stats.norm.ppf).
        let table: [(Double, Double)] = [(0.5, 0), (0.95, 1.6448536269514722), (0.975, 1.959963984540054),
                                         (0.001, -3.090232306167813), (0.9999, 3.7190164854556804)]
        for (p, x) in table { #expect(abs(inverseNormalCDF(p) - x) < 1e-9, "Φ⁻¹(\(p))") }
        for p in stride(from: 0.01, to: 1, by: 0.07) { #expect(abs(normalCDF(inverseNormalCDF(p)) - p) < 1e-12) }
    }

    @Test func paperThresholdIsTheFormula() {
        let g = gaussian(200_000, seed: 1, sigma: 0.01)
        let pr = GradientPruner(rate: 0.9, distribution: .gaussian, rule: .paper)
        var meanAbs = 0.0
        for i in 0..<g.count { meanAbs += Double(abs(g[i])) }
        meanAbs /= Double(g.count)
        let expected = inverseNormalCDF(0.95) * (Double.pi / 2).squareRoot() * meanAbs
        let tau = pr.threshold(g.data, count: g.count)
        #expect(abs(Double(tau) - expected) / expected < 1e-5)
        // p of a Gaussian lies below that threshold.
        let below = (0..<g.count).filter { abs(g[$0]) < tau }.count
        #expect(abs(Double(below) / Double(g.count) - 0.9) < 0.005)
    }

    @Test(arguments: [0.5, 0.8, 0.9, 0.95])
    func calibratedSparsityIsCloseToTarget(_ p: Double) {
        let g = gaussian(200_000, seed: 2, sigma: 3e-3)
        let ln = logNormal(200_000, seed: 3, mu: -9, sd: 1.5)
        for (t, dist) in [(g, GradientDistribution.gaussian), (ln, .lognormal)] {
            let pr = GradientPruner(rate: p, distribution: dist)
            let out = Tensor(shape: t.shape)
            let zeros = pr.apply(t.data, into: out.data, count: t.count, tau: pr.threshold(t.data, count: t.count), call: 1)
            let sparsity = Double(zeros) / Double(t.count)
            #expect(abs(sparsity - p) < 0.01, "\(dist) p \(p): sparsity \(sparsity)")
            #expect((0..<out.count).filter { out[$0] == 0 }.count == zeros)
        }
    }

    @Test func largeValuesPassAndSmallOnesBecomeZeroOrTau() {
        let g = gaussian(50_000, seed: 4)
        let pr = GradientPruner(rate: 0.9, seed: 7)
        let tau = pr.threshold(g.data, count: g.count)
        let out = Tensor(shape: g.shape)
        pr.apply(g.data, into: out.data, count: g.count, tau: tau, call: 3)
        for i in 0..<g.count {
            if abs(g[i]) >= tau {
                #expect(out[i] == g[i])
            } else {
                #expect(out[i] == 0 || out[i] == (g[i] < 0 ? -tau : tau))
            }
        }
    }

    @Test func pruningIsUnbiased() {
        let n = 2000, trials = 2000
        let g = gaussian(n, seed: 5)
        let pr = GradientPruner(rate: 0.9, seed: 11)
        let tau = pr.threshold(g.data, count: n)
        var mean = [Double](repeating: 0, count: n)
        let out = Tensor(shape: [n])
        for t in 0..<trials {
            pr.apply(g.data, into: out.data, count: n, tau: tau, call: UInt64(t))
            for i in 0..<n { mean[i] += Double(out[i]) / Double(trials) }
        }
        // Each pruned entry is a Bernoulli(|g|/τ)·τ draw: its mean over `trials` has a
        // standard deviation of at most τ/(2·sqrt(trials)). Allow 5 of those.
        let bound = 5 * Double(tau) / (2 * Double(trials).squareRoot())
        var worst = 0.0, total = 0.0
        for i in 0..<n {
            worst = max(worst, abs(mean[i] - Double(g[i])))
            total += mean[i] - Double(g[i])
        }
        #expect(worst < bound, "worst deviation \(worst), bound \(bound)")
        #expect(abs(total / Double(n)) < bound / 10)
        // A biased rule (plain zeroing below τ) fails the same bound: the test can fail.
        let zeroed = (0..<n).map { abs(g[$0]) < tau ? 0 : Double(g[$0]) }
        #expect((0..<n).contains { abs(zeroed[$0] - Double(g[$0])) > bound })
    }

    /// The threaded pruning equals one serial pass over the whole tensor: the random
    /// numbers depend on the element, not on how the work is split. (The global thread
    /// count is left alone: other suites run in parallel.)
    @Test func sameCallSameResultAnyThreadCount() {
        let g = gaussian(100_000, seed: 6)
        let pr = GradientPruner(rate: 0.9, seed: 3)
        let tau = pr.threshold(g.data, count: g.count)
        let a = Tensor(shape: g.shape), b = Tensor(shape: g.shape)
        let zerosSerial = pr.applyRange(g.data, into: a.data, count: g.count, tau: tau, key: pr.streamKey(call: 9),
                                        indexBase: 0)
        let zerosThreaded = pr.apply(g.data, into: b.data, count: g.count, tau: tau, call: 9)
        #expect(a.array == b.array)
        #expect(zerosSerial == zerosThreaded)
        // Two halves done separately give the same as well.
        let c = Tensor(shape: g.shape), key = pr.streamKey(call: 9)
        _ = pr.applyRange(g.data, into: c.data, count: 50_000, tau: tau, key: key, indexBase: 0)
        _ = pr.applyRange(g.data + 50_000, into: c.data + 50_000, count: 50_000, tau: tau, key: key, indexBase: 50_000)
        #expect(c.array == a.array)
    }
}
