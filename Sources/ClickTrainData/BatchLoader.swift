import ClickTrainCore
import Foundation

/// How images become float batches: per-channel normalisation, random crop with zero
/// padding and horizontal flip (training only).
public struct Augmentation: Sendable, Equatable {
    public var mean: [Float]
    public var std: [Float]
    /// Random crop after padding by this many pixels (0 = off).
    public var cropPadding: Int
    public var horizontalFlip: Bool

    public init(mean: [Float], std: [Float], cropPadding: Int = 0, horizontalFlip: Bool = false) {
        self.mean = mean
        self.std = std
        self.cropPadding = cropPadding
        self.horizontalFlip = horizontalFlip
    }

    /// Normalisation only (evaluation).
    public var evaluation: Augmentation { Augmentation(mean: mean, std: std) }
}

/// One batch: images [B, C, H, W] and labels. The tensors belong to the loader and are
/// valid until the next call to `next()`.
public struct Batch {
    public let images: Tensor
    public let labels: UnsafeBufferPointer<Int32>
    public let index: Int
    public var count: Int { images.shape[0] }
}

/// Produces the batches of one epoch in a background thread, a few batches ahead of the
/// training loop, into a fixed ring of buffers (no allocation per batch).
///
/// Everything random derives from (seed, epoch, batch index): the order is a seeded
/// shuffle per epoch and each batch's crops and flips come from their own stream, so a
/// resumed run sees exactly the batches of an uninterrupted one.
public final class BatchLoader: @unchecked Sendable {
    public let dataset: ImageDataset
    public let batchSize: Int
    public let augmentation: Augmentation
    public let order: [Int]
    public let batchCount: Int
    /// This loader's part of every batch: rows shard·n/shards ..< (shard+1)·n/shards of a
    /// batch of n (data parallelism; the crops and flips stay those of the whole batch).
    public let shard: Int, shards: Int
    private let seed: UInt64, epoch: Int
    private let slots: [(Tensor, UnsafeMutablePointer<Int32>)]
    private let filled = DispatchSemaphore(value: 0)
    private let free: DispatchSemaphore
    private var consumed = 0
    private var holding = false
    private var thread: Thread?
    private let stopFlag = ManagedAtomicFlag()

    /// Starts a background thread that prepares the batches of one epoch.
    /// - Parameters:
    ///   - dataset: the images and labels.
    ///   - batchSize: images per batch (the global batch when sharded).
    ///   - augmentation: normalisation, random crops and flips.
    ///   - shuffle: seeded shuffle for `epoch`, else dataset order.
    ///   - seed: the run's seed; with `epoch` it fixes the order, crops and flips.
    ///   - epoch: the epoch number.
    ///   - dropLast: drop the last incomplete batch (training), else keep it (evaluation).
    ///   - prefetch: batches prepared ahead.
    ///   - shard: this process's share of every batch (a data-parallel rank), `0..<shards`.
    ///   - shards: the number of shares (ranks); each loads only its rows.
    public init(dataset: ImageDataset, batchSize: Int, augmentation: Augmentation, shuffle: Bool, seed: UInt64,
                epoch: Int, dropLast: Bool, prefetch: Int = 2, shard: Int = 0, shards: Int = 1) {
        precondition(batchSize > 0, "batch size must be positive")
        precondition(shards >= 1 && (0..<shards).contains(shard), "shard \(shard) of \(shards)")
        self.shard = shard
        self.shards = shards
        self.dataset = dataset
        self.batchSize = batchSize
        self.augmentation = augmentation
        self.seed = seed
        self.epoch = epoch
        var idx = Array(0..<dataset.count)
        if shuffle {
            var rng = RNG(seed: seed, stream: UInt64(epoch) &* 2 &+ 1)
            idx.shuffle(using: &rng)
        }
        order = idx
        batchCount = dropLast ? dataset.count / batchSize : (dataset.count + batchSize - 1) / batchSize
        slots = (0...prefetch).map { _ in
            (Tensor(shape: [(batchSize + shards - 1) / shards, dataset.channels, dataset.height, dataset.width]),
             UnsafeMutablePointer<Int32>.allocate(capacity: (batchSize + shards - 1) / shards))
        }
        free = DispatchSemaphore(value: prefetch)
        let t = Thread { self.produce() }  // keeps the loader alive until the producer ends
        t.name = "clicktrain-loader"
        thread = t
        t.start()
    }

    deinit {
        for s in slots { s.1.deallocate() }
    }

    /// Stops the producer early (e.g. when training stops mid-epoch) and waits for it.
    public func cancel() {
        stopFlag.set()
        free.signal()
        while let t = thread, !t.isFinished { free.signal(); usleep(100) }
    }

    private func produce() {
        for b in 0..<batchCount {
            free.wait()
            if stopFlag.isSet { return }
            fill(slot: b % slots.count, batch: b)
            filled.signal()
        }
    }

    /// The next batch, or nil at the end of the epoch.
    public func next() -> Batch? {
        if holding { free.signal(); holding = false }
        guard consumed < batchCount else { return nil }
        filled.wait()
        let b = consumed
        consumed += 1
        holding = true
        let (images, labels) = slots[b % slots.count]
        let rows = rowRange(batch: b).count
        return Batch(images: rows == images.shape[0] ? images : images.firstRows(rows),
                     labels: UnsafeBufferPointer(start: labels, count: rows), index: b)
    }

    /// The rows of batch `b` this loader delivers.
    private func rowRange(batch b: Int) -> Range<Int> {
        let n = Swift.min(batchSize, dataset.count - b * batchSize)
        return shard * n / shards..<(shard + 1) * n / shards
    }

    private func fill(slot: Int, batch b: Int) {
        let (images, labels) = slots[slot]
        let n = Swift.min(batchSize, dataset.count - b * batchSize)
        let rows = rowRange(batch: b)
        var rng = RNG(seed: seed, stream: (UInt64(epoch) << 32) | UInt64(b) | (1 << 62))
        let c = dataset.channels, h = dataset.height, w = dataset.width, plane = h * w
        let aug = augmentation
        let scale = (0..<c).map { 1 / (255 * aug.std[$0 % aug.std.count]) }
        let shift = (0..<c).map { -aug.mean[$0 % aug.mean.count] / aug.std[$0 % aug.std.count] }
        dataset.pixels.withUnsafeBufferPointer { px in
            for i in 0..<n {
                let src = order[b * batchSize + i]
                var dy = 0, dx = 0
                if aug.cropPadding > 0 {
                    let p = aug.cropPadding
                    dy = Int(rng.next() % UInt64(2 * p + 1)) - p
                    dx = Int(rng.next() % UInt64(2 * p + 1)) - p
                }
                let flip = aug.horizontalFlip && (rng.next() & 1) == 1
                guard rows.contains(i) else { continue }  // another rank's image: its draws only
                let row = i - rows.lowerBound
                labels[row] = dataset.labels[src]
                for ch in 0..<c {
                    let s = px.baseAddress! + src * c * plane + ch * plane
                    let d = images.data + (row * c + ch) * plane
                    let zero = shift[ch]  // a padded (black) pixel after normalisation
                    for y in 0..<h {
                        let sy = y + dy
                        for x in 0..<w {
                            let sx = (flip ? w - 1 - x : x) + dx
                            d[y * w + x] = (sy >= 0 && sy < h && sx >= 0 && sx < w)
                                ? Float(s[sy * w + sx]) * scale[ch] + shift[ch] : zero
                        }
                    }
                }
            }
        }
    }
}

/// A flag set once from one thread and read from another.
final class ManagedAtomicFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    func set() { lock.lock(); value = true; lock.unlock() }
    var isSet: Bool { lock.lock(); defer { lock.unlock() }; return value }
}

/// `for batch in loader { ... }` runs through the epoch's batches once.
extension BatchLoader: Sequence, IteratorProtocol {}
