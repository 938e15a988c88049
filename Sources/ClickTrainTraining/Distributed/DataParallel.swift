import ClickTrainCore
import ClickTrainNN
import Foundation

/// Data-parallel training as a training method: every rank runs the same model on its
/// shard of each batch, and the gradients are averaged over the ranks before any other
/// method or the optimizer sees them (so it must come first in the run's methods).
///
/// - Overlap: the parameters are split into buckets in backward order; a bucket starts its
///   non-blocking allreduce as soon as backward has produced all its gradients (reported by
///   `Sequential.childBackwardDone`), so the exchange runs behind the rest of backward.
/// - Pattern-compressed exchange: a parameter with a mask sends only its kept entries,
///   packed in index order. Every rank holds the same masks, so no indices travel; until
///   hard pruning (no masks) the exchange is dense.
/// - `syncBatchNorm`: every batch norm normalises with the statistics of the global batch.
public final class DataParallel: TrainingMethod {
    public let group: any ProcessGroup
    public let syncBatchNorm: Bool
    let model: any Layer
    /// Floats per bucket before a new one starts.
    let bucketFloats: Int

    private struct Bucket {
        var members: [Int]
        var floats: Int
        var buffer: UnsafeMutableBufferPointer<Float>
        var ready = 0
    }

    /// Parameters in backward order (the model's last layer first).
    private var params: [Parameter] = []
    /// Kept entries of each masked parameter (nil: all), and the mask they were built from.
    private var kept: [[Int32]?] = []
    private var masks: [Tensor?] = []
    private var bucketOf: [Int] = []
    private var buckets: [Bucket] = []
    /// Per parameter: its gradient is final in this step's backward.
    private var isReady: [Bool] = []
    /// Between `stepStart` and `afterBackward` (backward hooks outside a step do nothing).
    private var inStep = false
    private var nextLaunch = 0
    private var indexOf: [ObjectIdentifier: Int] = [:]
    private var paramsOfLayer: [ObjectIdentifier: [Int]] = [:]

    // Per-epoch figures for metrics.jsonl.
    private var stepBytes = 0, steps = 0
    private var bytesAtStepStart = 0
    private var waitAtEpochStart = 0.0

    public init(group: any ProcessGroup, model: any Layer, syncBatchNorm: Bool, bucketFloats: Int = 1 << 16) {
        self.group = group
        self.model = model
        self.syncBatchNorm = syncBatchNorm
        self.bucketFloats = bucketFloats
        attach()
    }

    deinit { releaseBuckets() }

    public func modelDidChange() { attach() }

    /// Hooks every `Sequential` of the model and lays out the buckets for its parameters.
    private func attach() {
        params = model.parameters().reversed()
        indexOf = Dictionary(uniqueKeysWithValues: params.enumerated().map { (ObjectIdentifier($0.element), $0.offset) })
        paramsOfLayer = [:]
        for (_, layer) in model.namedModules() {
            paramsOfLayer[ObjectIdentifier(layer)] = layer.parameters().compactMap { indexOf[ObjectIdentifier($0)] }
            if let seq = layer as? Sequential {
                seq.childBackwardDone = { [weak self] in self?.layerDone($0) }
            }
            if let bn = layer as? BatchNorm2d { bn.group = syncBatchNorm ? group : nil }
        }
        layOutBuckets()
    }

    private func releaseBuckets() {
        for b in buckets { b.buffer.deallocate() }
        buckets = []
    }

    /// Buckets over the parameters in backward order, sized by what each one sends.
    private func layOutBuckets() {
        releaseBuckets()
        kept = params.map { p in
            guard let m = p.mask else { return nil }
            return (0..<m.count).compactMap { m.data[$0] != 0 ? Int32($0) : nil }
        }
        masks = params.map(\.mask)
        bucketOf = []
        isReady = Array(repeating: false, count: params.count)
        var members: [Int] = [], floats = 0
        func close() {
            guard !members.isEmpty else { return }
            buckets.append(Bucket(members: members, floats: floats,
                                  buffer: UnsafeMutableBufferPointer<Float>.allocate(capacity: max(floats, 1))))
            members = []
            floats = 0
        }
        for (i, p) in params.enumerated() {
            bucketOf.append(buckets.count)
            members.append(i)
            floats += kept[i]?.count ?? p.grad.count
            if floats >= bucketFloats { close() }
        }
        close()
    }

    public func stepStart(_ step: StepInfo) {
        if zip(params, masks).contains(where: { $0.mask !== $1 }) { layOutBuckets() }
        for i in buckets.indices { buckets[i].ready = 0 }
        for i in isReady.indices { isReady[i] = false }
        inStep = true
        nextLaunch = 0
        bytesAtStepStart = group.allreduceBytes
    }

    private func layerDone(_ layer: any Layer) {
        guard inStep, let members = paramsOfLayer[ObjectIdentifier(layer)] else { return }
        for i in members where !isReady[i] {
            isReady[i] = true
            buckets[bucketOf[i]].ready += 1
        }
        launchReady()
        group.progress()
    }

    /// Starts the buckets whose gradients are all there, in bucket order (the same on every rank).
    private func launchReady() {
        while nextLaunch < buckets.count, buckets[nextLaunch].ready == buckets[nextLaunch].members.count {
            let b = buckets[nextLaunch]
            var offset = 0
            for i in b.members {
                let g = params[i].grad
                if let k = kept[i] {
                    for (j, idx) in k.enumerated() { b.buffer[offset + j] = g.data[Int(idx)] }
                    offset += k.count
                } else {
                    (b.buffer.baseAddress! + offset).update(from: g.data, count: g.count)
                    offset += g.count
                }
            }
            group.startAllreduceSum(b.buffer)
            nextLaunch += 1
        }
    }

    /// The gradients averaged over the ranks; pruned entries become 0.
    public func afterBackward(_ step: StepInfo) {
        for i in buckets.indices { buckets[i].ready = buckets[i].members.count }  // layers no hook reported
        launchReady()
        group.waitAll()
        let scale = 1 / Float(group.size)
        for b in buckets {
            var offset = 0
            for i in b.members {
                let g = params[i].grad
                if let k = kept[i] {
                    g.zero()
                    for (j, idx) in k.enumerated() { g.data[Int(idx)] = b.buffer[offset + j] * scale }
                    offset += k.count
                } else {
                    let src = b.buffer.baseAddress! + offset
                    for j in 0..<g.count { g.data[j] = src[j] * scale }
                    offset += g.count
                }
            }
        }
        inStep = false
        stepBytes += group.allreduceBytes - bytesAtStepStart
        steps += 1
    }

    public func epochStart(epoch: Int) throws {
        stepBytes = 0
        steps = 0
        waitAtEpochStart = group.waitSeconds
    }

    public func addMetrics(to metrics: inout EpochMetrics) -> String {
        metrics.ranks = group.size
        metrics.allreduce_bytes_per_step = steps > 0 ? stepBytes / steps : 0
        metrics.comm_seconds = group.waitSeconds - waitAtEpochStart
        return ""
    }

    public func checkpoint() throws -> MethodCheckpoint { MethodCheckpoint(metadata: ["ranks": String(group.size)]) }
}
