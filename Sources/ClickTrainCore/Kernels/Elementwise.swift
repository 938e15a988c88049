/// `y = max(x, 0)`.
package func reluForward(x: Tensor, y: Tensor) {
    let xp = x.data, yp = y.data
    Threads.parallelRanges(x.count, minPerChunk: 1 << 15) { r in
        for i in r { yp[i] = max(xp[i], 0) }
    }
}

/// `dx = dy · [y > 0]` (y is the forward output).
package func reluBackward(y: Tensor, gradOutput dy: Tensor, gradInput dx: Tensor) {
    let yp = y.data, gp = dy.data, dp = dx.data
    Threads.parallelRanges(y.count, minPerChunk: 1 << 15) { r in
        for i in r { dp[i] = yp[i] > 0 ? gp[i] : 0 }
    }
}

/// `out = a + b`.
package func add(_ a: Tensor, _ b: Tensor, into out: Tensor) {
    precondition(a.count == b.count && a.count == out.count, "add: \(a.shape) + \(b.shape) into \(out.shape)")
    let ap = a.data, bp = b.data, op = out.data
    Threads.parallelRanges(a.count, minPerChunk: 1 << 15) { r in
        for i in r { op[i] = ap[i] + bp[i] }
    }
}

/// `y = max(a + b, 0)`: the residual add and ReLU at the end of a ResNet block.
package func addReluForward(_ a: Tensor, _ b: Tensor, y: Tensor) {
    precondition(a.count == b.count && a.count == y.count, "addRelu: \(a.shape) + \(b.shape) into \(y.shape)")
    let ap = a.data, bp = b.data, yp = y.data
    Threads.parallelRanges(a.count, minPerChunk: 1 << 15) { r in
        for i in r { yp[i] = max(ap[i] + bp[i], 0) }
    }
}
