import ClickTrainCore
import ClickTrainSparse
import ClickTrainTestSupport
import Testing

/// A ClickTrain-shaped mask: each kernel keeps one of the four 2x2 corner patterns, a
/// `removed` fraction of kernels is dropped, and filter 0 loses every kernel.
func patternMask(_ shape: [Int], removed: Double, seed: UInt64) -> Tensor {
    let corners: [[Int]] = [[0, 1, 3, 4], [1, 2, 4, 5], [3, 4, 6, 7], [4, 5, 7, 8]]
    var rng = RNG(seed: seed)
    let m = Tensor(shape: shape)
    for k in 0..<(shape[0] * shape[1]) {
        if k < shape[1] || Double(rng.uniform()) < removed { continue }
        for t in corners[Int(rng.next() % 4)] { m[k * 9 + t] = 1 }
    }
    return m
}

@Suite("Pattern-sparse convolution")
struct PatternConvTests {
    @Test(arguments: [(1, 16, 8, 8, 16, 1), (5, 8, 9, 7, 12, 2), (2, 32, 6, 6, 64, 1), (3, 3, 11, 11, 5, 2)])
    func forwardEqualsDenseOnMaskedWeights(_ a: (Int, Int, Int, Int, Int, Int)) {
        let (n, c, h, w, k, s) = a
        let g = ConvGeometry(batch: n, inChannels: c, height: h, width: w, outChannels: k, kernelSize: 3, stride: s,
                             padding: 1)
        let x = Reference.random(g.inputShape, seed: 1)
        let wt = Reference.random(g.weightShape, seed: 2)
        let m = patternMask(g.weightShape, removed: 0.6, seed: 3)
        for i in 0..<wt.count { wt[i] *= m[i] }
        let bias = Reference.random([k], seed: 4)
        let pw = PatternWeights(weight: wt)
        #expect(pw.dense().array == wt.array)
        #expect(pw.nonZeros == (0..<wt.count).filter { wt[$0] != 0 }.count)
        #expect(pw.rowStart[1] == 0)  // filter 0 lost every kernel
        let y = Tensor(shape: g.outputShape)
        PatternConvKernel(g).forward(input: x, weights: pw, bias: bias, output: y)
        let ref = Reference.conv2d(x, wt, bias: bias, stride: s, padding: 1)
        #expect(Reference.maxRelativeError(y, ref) <= 1e-5)
    }

    @Test func csrViewMatchesTheIm2colMatrix() {
        let wt = Reference.random([4, 3, 3, 3], seed: 5)
        let m = patternMask(wt.shape, removed: 0.3, seed: 6)
        for i in 0..<wt.count { wt[i] *= m[i] }
        let (rp, col, val) = PatternWeights(weight: wt).csr()
        #expect(rp.count == 5)
        for f in 0..<4 {
            var dense = [Float](repeating: 0, count: 27)
            for e in Int(rp[f])..<Int(rp[f + 1]) { dense[Int(col[e])] = val[e] }
            #expect(dense == Array(wt.array[(f * 27)..<((f + 1) * 27)]))
            #expect(Array(col[Int(rp[f])..<Int(rp[f + 1])]) == col[Int(rp[f])..<Int(rp[f + 1])].sorted())
        }
    }
}

@Suite("Pattern-sparse convolution, backward")
struct PatternConvBackwardTests {
    @Test(arguments: [(1, 16, 8, 8, 16, 1), (5, 8, 9, 7, 12, 2), (2, 32, 6, 6, 64, 1), (3, 3, 11, 11, 5, 2)])
    func gradientsEqualDenseOnMaskedWeights(_ a: (Int, Int, Int, Int, Int, Int)) {
        let (n, c, h, w, k, s) = a
        let g = ConvGeometry(batch: n, inChannels: c, height: h, width: w, outChannels: k, kernelSize: 3, stride: s,
                             padding: 1)
        let x = Reference.random(g.inputShape, seed: 7)
        let wt = Reference.random(g.weightShape, seed: 8)
        let m = patternMask(g.weightShape, removed: 0.5, seed: 9)
        for i in 0..<wt.count { wt[i] *= m[i] }
        let dy = Reference.random(g.outputShape, seed: 10)
        let pw = PatternWeights(weight: wt, mask: m)
        let dx = Tensor(shape: g.inputShape), db = Tensor(shape: [k])
        dx.fill(3)  // must be overwritten
        var dv = [Float](repeating: 0, count: pw.nonZeros)
        PatternConvKernel(g).backward(input: x, weights: pw, gradOutput: dy, gradInput: dx, gradValues: &dv, gradBias: db)
        let ref = Reference.conv2dBackward(x, wt, dy, stride: s, padding: 1)
        #expect(Reference.maxRelativeError(dx, ref.dx) <= 1e-5, "input gradient")
        #expect(Reference.maxRelativeError(db, ref.db) <= 1e-5, "bias gradient")
        // The kept weights' gradients, scattered back to [K, C, 3, 3], equal the dense
        // gradient on the mask; the pruned ones are never computed.
        let gradAsWeight = PatternWeights(weight: wt, mask: m)
        let dw = Tensor(shape: g.weightShape)
        var v = 0
        for f in 0..<k {
            for e in Int(gradAsWeight.rowStart[f])..<Int(gradAsWeight.rowStart[f + 1]) {
                for i in Int(gradAsWeight.tapStart[e])..<Int(gradAsWeight.tapStart[e + 1]) {
                    dw[(f * c + Int(gradAsWeight.channel[e])) * 9 + Int(gradAsWeight.tap[i])] = dv[v]
                    v += 1
                }
            }
        }
        let refMasked = Tensor(shape: g.weightShape)
        for i in 0..<dw.count { refMasked[i] = ref.dw[i] * m[i] }
        #expect(Reference.maxRelativeError(dw, refMasked) <= 1e-5, "weight gradient")
    }
}
