import CBLAS

/// `C = alpha * op(A) * op(B) + beta * C` on row-major matrices (OpenBLAS sgemm).
/// op(A) is [M, K], op(B) is [K, N], C is [M, N].
@inlinable
package func sgemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float,
                  a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                  beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) {
    cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
}

/// Fully connected forward: `y[N, O] = x[N, I] · Wᵀ + b`, W is [O, I] (PyTorch layout).
package func linearForward(x: Tensor, weight: Tensor, bias: Tensor?, y: Tensor) {
    let n = x.shape[0], i = weight.shape[1], o = weight.shape[0]
    precondition(x.count == n * i, "linear: input \(x.shape) does not have \(i) features")
    precondition(y.count == n * o, "linear: output \(y.shape), expected [\(n), \(o)]")
    if let b = bias {
        for r in 0..<n { (y.data + r * o).update(from: b.data, count: o) }
    }
    sgemm(transA: false, transB: true, m: n, n: o, k: i, alpha: 1, a: x.data, lda: i, b: weight.data, ldb: i,
          beta: bias == nil ? 0 : 1, c: y.data, ldc: o)
}

/// Fully connected backward: `dx = dy · W`, `dW = dyᵀ · x`, `db = Σ_n dy` (overwritten).
package func linearBackward(x: Tensor, weight: Tensor, gradOutput dy: Tensor, gradInput dx: Tensor?,
                           gradWeight dW: Tensor, gradBias db: Tensor?) {
    let n = x.shape[0], i = weight.shape[1], o = weight.shape[0]
    if let dx = dx {
        sgemm(transA: false, transB: false, m: n, n: i, k: o, alpha: 1, a: dy.data, lda: o, b: weight.data, ldb: i,
              beta: 0, c: dx.data, ldc: i)
    }
    sgemm(transA: true, transB: false, m: o, n: i, k: n, alpha: 1, a: dy.data, lda: o, b: x.data, ldb: i,
          beta: 0, c: dW.data, ldc: i)
    if let db = db {
        db.zero()
        for r in 0..<n {
            let row = dy.data + r * o
            for j in 0..<o { db.data[j] += row[j] }
        }
    }
}
