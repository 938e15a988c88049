import ClickTrainCore
import ClickTrainNN
import ClickTrainSparse
import ClickTrainTestSupport
import Testing

@Suite("Activation-gradient pruning in the layers")
struct GradientPruningPolicyTests {
    /// The kernel choice follows the sparsity a layer measured, not only the target: at a
    /// target of 0.5 a gradient that is 97% exact zeros runs the sparse kernels from the
    /// second step on, and they give the dense kernels' gradients.
    @Test func sparseKernelsFollowTheMeasuredSparsity() {
        var rng = RNG(seed: 11)
        let a = Conv2d(16, 16, kernelSize: 3, stride: 1, padding: 1, bias: true, rng: &rng)
        let b = Conv2d(weight: a.weight.value.clone(), bias: a.bias!.value.clone(), stride: 1, padding: 1)
        let policy = GradientPruningPolicy(pruner: GradientPruner(rate: 0.5, seed: 1))
        #expect(policy.install(on: a).count == 1)
        let x = Reference.random([4, 16, 8, 8], seed: 12)
        // 3% of entries ±1, far above the threshold (mean|g| = 0.03): pruning keeps them as
        // they are, so the pruned gradient is the gradient itself.
        let dy = Tensor(shape: [4, 16, 8, 8])
        for i in 0..<dy.count where rng.uniform() < 0.03 { dy[i] = rng.uniform() < 0.5 ? -1 : 1 }
        _ = b.forward(x)
        let dxRef = b.backward(dy).clone(), dwRef = b.weight.grad.clone(), dbRef = b.bias!.grad.clone()

        var used: [Bool] = []
        for _ in 0..<2 {
            _ = a.forward(x)
            let dx = a.backward(dy)
            used.append(a.lastBackwardUsedSparseErrorKernels)
            #expect(Reference.maxRelativeError(dx, dxRef) <= 1e-5)
            #expect(Reference.maxRelativeError(a.weight.grad, dwRef) <= 1e-5)
            #expect(Reference.maxRelativeError(a.bias!.grad, dbRef) <= 1e-5)
        }
        #expect(used == [false, true], "dense at the 0.5 target, sparse once 97% zeros were measured")
        #expect(policy.lastSparsity.values.allSatisfy { $0 > 0.95 })

        // A dense gradient at the same target stays on the dense kernels.
        let dense = Reference.random(dy.shape, seed: 13)
        _ = a.forward(x)
        _ = a.backward(dense)
        _ = a.forward(x)
        _ = a.backward(dense)
        #expect(!a.lastBackwardUsedSparseErrorKernels)
    }
}
