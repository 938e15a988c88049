import ClickTrainCore
import ClickTrainSparse
import ClickTrainTestSupport
import Testing

struct SparseCase: CustomStringConvertible, Sendable {
    var n, c, h, k, ks, stride, pad: Int
    var density: Double
    var description: String { "N\(n) C\(c) \(h)x\(h) K\(k) k\(ks) s\(stride) p\(pad) density \(density)" }
}

@Suite("Sparse error-map backward kernels")
struct SparseErrorConvTests {
    @Test(arguments: [
        SparseCase(n: 1, c: 8, h: 7, k: 4, ks: 3, stride: 1, pad: 1, density: 0.1),
        SparseCase(n: 5, c: 16, h: 9, k: 16, ks: 3, stride: 2, pad: 1, density: 0.2),
        SparseCase(n: 3, c: 32, h: 8, k: 64, ks: 1, stride: 2, pad: 0, density: 0.05),
        SparseCase(n: 2, c: 16, h: 6, k: 8, ks: 3, stride: 1, pad: 0, density: 0.5),
        SparseCase(n: 4, c: 8, h: 5, k: 3, ks: 3, stride: 1, pad: 1, density: 0.0),
    ])
    func matchesDenseOnPrunedGradient(_ t: SparseCase) {
        let g = ConvGeometry(batch: t.n, inChannels: t.c, height: t.h, width: t.h, outChannels: t.k,
                             kernelSize: t.ks, stride: t.stride, padding: t.pad)
        let x = Reference.random(g.inputShape, seed: 1)
        let w = Reference.random(g.weightShape, seed: 2)
        let dy = Reference.random(g.outputShape, seed: 3)
        var rng = RNG(seed: 4)
        for i in 0..<dy.count where Double(rng.uniform()) >= t.density { dy[i] = 0 }
        // One output channel of the first image with every entry removed (an empty plane).
        let plane = g.outHeight * g.outWidth
        for i in 0..<plane { dy[i] = 0 }

        let dense = DenseConv2dKernel(g, bias: true)
        let y = Tensor(shape: g.outputShape)
        dense.forward(input: x, weight: w, bias: Tensor(shape: [t.k]), output: y)
        let dxD = Tensor(shape: g.inputShape), dwD = Tensor(shape: g.weightShape), dbD = Tensor(shape: [t.k])
        dense.backward(input: x, weight: w, gradOutput: dy, gradInput: dxD, gradWeight: dwD, gradBias: dbD)

        let sparse = SparseErrorConvKernel(g)
        let dxS = Tensor(shape: g.inputShape), dwS = Tensor(shape: g.weightShape), dbS = Tensor(shape: [t.k])
        dxS.fill(7)  // must be overwritten
        let zeros = sparse.backward(input: x, weight: w, gradOutput: dy, gradInput: dxS, gradWeight: dwS, gradBias: dbS)
        #expect(zeros == (0..<dy.count).filter { dy[$0] == 0 }.count)
        if t.density == 0 {
            #expect(dxS.array.allSatisfy { $0 == 0 } && dwS.array.allSatisfy { $0 == 0 })
        } else {
            #expect(Reference.maxRelativeError(dxS, dxD) <= 1e-5, "input gradient \(t)")
            #expect(Reference.maxRelativeError(dwS, dwD) <= 1e-5, "weight gradient \(t)")
            #expect(Reference.maxRelativeError(dbS, dbD) <= 1e-5, "bias gradient \(t)")
        }
    }

    /// Pruning fused into the kernel prunes exactly as `GradientPruner.apply` does, and the
    /// gradients equal the dense kernels' on that pruned map.
    @Test(arguments: [(1, 1), (2, 0)])
    func fusedPruningMatchesApplyThenDense(_ args: (Int, Int)) {
        let (stride, pad) = args
        let g = ConvGeometry(batch: 3, inChannels: 16, height: 10, width: 10, outChannels: 8, kernelSize: 3,
                             stride: stride, padding: pad)
        let x = Reference.random(g.inputShape, seed: 5)
        let w = Reference.random(g.weightShape, seed: 6)
        let dy = Reference.random(g.outputShape, seed: 7)
        let pr = GradientPruner(rate: 0.9, seed: 3)
        let tau = pr.threshold(dy.data, count: dy.count)
        let applied = Tensor(shape: dy.shape)
        let zerosApplied = pr.apply(dy.data, into: applied.data, count: dy.count, tau: tau, call: 42)

        let sparse = SparseErrorConvKernel(g, keepPrunedGradient: true)
        let dxS = Tensor(shape: g.inputShape), dwS = Tensor(shape: g.weightShape)
        let zeros = sparse.backward(input: x, weight: w, gradOutput: dy, tau: tau, key: pr.streamKey(call: 42),
                                    gradInput: dxS, gradWeight: dwS, gradBias: nil)
        #expect(zeros == zerosApplied)
        #expect(sparse.prunedGradient!.array == applied.array)

        let dense = DenseConv2dKernel(g, bias: false)
        dense.forward(input: x, weight: w, bias: nil, output: Tensor(shape: g.outputShape))
        let dxD = Tensor(shape: g.inputShape), dwD = Tensor(shape: g.weightShape)
        dense.backward(input: x, weight: w, gradOutput: applied, gradInput: dxD, gradWeight: dwD, gradBias: nil)
        #expect(Reference.maxRelativeError(dxS, dxD) <= 1e-5)
        #expect(Reference.maxRelativeError(dwS, dwD) <= 1e-5)
    }
}
