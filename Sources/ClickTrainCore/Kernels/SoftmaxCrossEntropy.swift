import Foundation

/// Mean softmax cross-entropy over a batch, with optional label smoothing ε (the
/// target is `(1-ε)·onehot + ε/K`, as `torch.nn.CrossEntropyLoss(label_smoothing:)`).
///
/// - Parameters: logits [N, K]; labels N class indices; grad [N, K] receives dLoss/dlogits.
/// - Returns: (mean loss, number of rows whose arg-max equals the label).
@discardableResult
public func softmaxCrossEntropy(logits: Tensor, labels: UnsafeBufferPointer<Int32>, labelSmoothing: Float = 0,
                                grad: Tensor?) -> (loss: Float, correct: Int) {
    let n = logits.shape[0], k = logits.count / max(n, 1)
    precondition(labels.count >= n, "cross-entropy: \(labels.count) labels for \(n) rows")
    var total = 0.0
    var correct = 0
    let eps = labelSmoothing
    for r in 0..<n {
        let row = logits.data + r * k
        var mx = row[0], am = 0
        for j in 1..<k where row[j] > mx { mx = row[j]; am = j }
        let label = Int(labels[r])
        precondition(label >= 0 && label < k, "cross-entropy: label \(label) outside 0..<\(k)")
        if am == label { correct += 1 }
        var s: Double = 0
        for j in 0..<k { s += Double(Foundation.exp(row[j] - mx)) }
        let logZ = Double(mx) + Foundation.log(s)
        var rowLoss = (1 - Double(eps)) * (logZ - Double(row[label]))
        if eps > 0 {
            var sumLogits = 0.0
            for j in 0..<k { sumLogits += Double(row[j]) }
            rowLoss += Double(eps) * (logZ - sumLogits / Double(k))
        }
        total += rowLoss
        if let g = grad {
            let gr = g.data + r * k
            let invN = 1 / Float(n)
            for j in 0..<k {
                let p = Float(Foundation.exp(Double(row[j]) - logZ))
                let t = (j == label ? 1 - eps : 0) + eps / Float(k)
                gr[j] = (p - t) * invN
            }
        }
    }
    return (Float(total / Double(max(n, 1))), correct)
}
