import ClickTrainCore
import ClickTrainData
import ClickTrainTestSupport
import Foundation
import Testing

@Suite("IDX, CIFAR and batch loading")
struct DataTests {
    @Test(arguments: [true, false])
    func idxRoundTrip(_ gzip: Bool) throws {
        let dir = SyntheticData.temporaryDirectory("idx")
        SyntheticData.writeIDXFolder(dir, train: 20, test: 10, size: 12, gzip: gzip) { try! IDX.write($0, dims: $1, bytes: $2) }
        let ds = try ImageDataset.load(.fashionMNIST, directory: dir, train: true)
        #expect(ds.count == 20 && ds.height == 12 && ds.width == 12 && ds.channels == 1)
        let (px, lab) = SyntheticData.images(count: 20, size: 12, seed: 1)
        #expect(ds.pixels == px)
        #expect(ds.labels == lab.map { Int32($0) })
        #expect(try ImageDataset.load(.fashionMNIST, directory: dir, train: false).count == 10)
    }

    @Test func truncatedAndCorruptIDXGiveClearErrors() throws {
        let dir = SyntheticData.temporaryDirectory("idxbad")
        try IDX.write(dir + "/raw", dims: [4, 3, 3], bytes: [UInt8](repeating: 7, count: 36))
        var data = try Data(contentsOf: URL(fileURLWithPath: dir + "/raw"))
        try data.prefix(30).write(to: URL(fileURLWithPath: dir + "/short"))
        #expect(throws: DataError.truncated(path: dir + "/short", expectedBytes: 36, actualBytes: 14)) {
            try IDX.read(dir + "/short")
        }
        data[0] = 9
        try data.write(to: URL(fileURLWithPath: dir + "/magic"))
        #expect { try IDX.read(dir + "/magic") } throws: { "\($0)".contains("magic") }

        try IDX.write(dir + "/z.gz", dims: [50, 28, 28], bytes: (0..<(50 * 784)).map { UInt8($0 % 251) })
        let gz = try Data(contentsOf: URL(fileURLWithPath: dir + "/z.gz"))
        try gz.prefix(gz.count / 2).write(to: URL(fileURLWithPath: dir + "/cut.gz"))
        #expect { try IDX.read(dir + "/cut.gz") } throws: { e in
            let s = "\(e)"
            return s.contains("cut.gz") && (s.contains("truncated") || s.contains("corrupt"))
        }
    }

    @Test func missingFolderNamesThePackage() {
        #expect { try ImageDataset.load(.fashionMNIST, directory: "/nonexistent/fm", train: true) } throws: {
            "\($0)".contains("apt-get install dataset-fashion-mnist")
        }
    }

    @Test func labelCountMismatchIsAnError() throws {
        let dir = SyntheticData.temporaryDirectory("idxmis")
        try IDX.write(dir + "/train-images-idx3-ubyte", dims: [3, 2, 2], bytes: [UInt8](repeating: 0, count: 12))
        try IDX.write(dir + "/train-labels-idx1-ubyte", dims: [2], bytes: [0, 1])
        #expect { try ImageDataset.load(.mnist, directory: dir, train: true) } throws: { "\($0)".contains("2 labels for 3 images") }
    }

    @Test(arguments: [1, 2])
    func cifarReaders(_ labelBytes: Int) throws {
        let dir = SyntheticData.temporaryDirectory("cifar")
        let (px, lab) = SyntheticData.images(count: 7, size: 32, channels: 3, seed: 4)
        let labels = lab.map { Int32($0) }
        if labelBytes == 1 {
            for f in (1...5).map({ "data_batch_\($0).bin" }) + ["test_batch.bin"] {
                try CIFAR.write(dir + "/" + f, images: px, labels: labels, labelBytes: 1)
            }
            let ds = try ImageDataset.load(.cifar10, directory: dir, train: true)
            #expect(ds.count == 35 && ds.channels == 3 && ds.classes == 10)
            #expect(Array(ds.pixels[0..<(7 * 3072)]) == px)
            #expect(Array(ds.labels[0..<7]) == labels)
        } else {
            try CIFAR.write(dir + "/train.bin", images: px, labels: labels, labelBytes: 2)
            let ds = try ImageDataset.load(.cifar100, directory: dir, train: true)
            #expect(ds.count == 7 && ds.labels == labels && ds.pixels == px && ds.classes == 100)
            let d = try Data(contentsOf: URL(fileURLWithPath: dir + "/train.bin"))
            try d.prefix(d.count - 100).write(to: URL(fileURLWithPath: dir + "/test.bin"))
            #expect { try ImageDataset.load(.cifar100, directory: dir, train: false) } throws: {
                "\($0)".contains("test.bin") && "\($0)".contains("truncated")
            }
        }
    }

    func tinyDataset() -> ImageDataset {
        let (px, lab) = SyntheticData.images(count: 50, size: 8, seed: 9)
        return ImageDataset(channels: 1, height: 8, width: 8, classes: 10, pixels: px, labels: lab.map { Int32($0) })
    }

    func collect(_ l: BatchLoader) -> (labels: [Int32], images: [Float], sizes: [Int]) {
        var labels: [Int32] = [], images: [Float] = [], sizes: [Int] = []
        while let b = l.next() {
            labels += Array(b.labels)
            images += b.images.array
            sizes.append(b.count)
        }
        return (labels, images, sizes)
    }

    @Test func loaderOrderIsSeededAndCoversEveryImage() {
        let ds = tinyDataset()
        let aug = Augmentation(mean: [0.5], std: [0.25], cropPadding: 2, horizontalFlip: true)
        func run(seed: UInt64, epoch: Int) -> (labels: [Int32], images: [Float], sizes: [Int]) {
            collect(BatchLoader(dataset: ds, batchSize: 16, augmentation: aug, shuffle: true, seed: seed, epoch: epoch,
                                dropLast: false))
        }
        let a = run(seed: 1, epoch: 0), b = run(seed: 1, epoch: 0), c = run(seed: 1, epoch: 1)
        #expect(a.labels == b.labels && a.images == b.images)
        #expect(a.images != c.images)
        #expect(a.sizes == [16, 16, 16, 2])
        #expect(a.labels.sorted() == ds.labels.sorted())
        let dropped = collect(BatchLoader(dataset: ds, batchSize: 16, augmentation: aug, shuffle: true, seed: 1,
                                          epoch: 0, dropLast: true))
        #expect(dropped.sizes == [16, 16, 16])
    }

    /// Data parallelism: the shards of a batch, side by side, are the whole batch, crops and
    /// flips included, for every shard count (the last, short batch too).
    @Test func shardsTogetherAreTheWholeBatch() {
        let ds = tinyDataset()
        let aug = Augmentation(mean: [0.5], std: [0.25], cropPadding: 2, horizontalFlip: true)
        func loader(_ shard: Int, _ shards: Int) -> BatchLoader {
            BatchLoader(dataset: ds, batchSize: 12, augmentation: aug, shuffle: true, seed: 4, epoch: 2, dropLast: false,
                        shard: shard, shards: shards)
        }
        let whole = loader(0, 1)
        var batches: [(labels: [Int32], images: [Float])] = []
        while let b = whole.next() { batches.append((Array(b.labels), b.images.array)) }
        #expect(batches.count == 5)
        for shards in [2, 3, 4] {
            let parts = (0..<shards).map { loader($0, shards) }
            for (i, batch) in batches.enumerated() {
                var labels: [Int32] = [], images: [Float] = []
                for p in parts {
                    guard let b = p.next() else { Issue.record("shard ended early"); return }
                    labels += Array(b.labels)
                    images += b.images.array
                }
                #expect(labels == batch.labels && images == batch.images, "batch \(i) over \(shards) shards")
            }
        }
    }

    @Test func normalisationCropAndFlipValues() {
        // One 3x3 image with pixels 0...8 (times 10).
        let ds = ImageDataset(channels: 1, height: 3, width: 3, classes: 2, pixels: (0..<9).map { UInt8($0 * 10) },
                              labels: [1])
        let plain = collect(BatchLoader(dataset: ds, batchSize: 1, augmentation: Augmentation(mean: [0.1], std: [0.5]),
                                        shuffle: false, seed: 0, epoch: 0, dropLast: false))
        for i in 0..<9 { #expect(abs(plain.images[i] - (Float(i * 10) / 255 - 0.1) / 0.5) < 1e-6) }
        // With flips and crops, every output is the source shifted by (dy, dx) and maybe
        // mirrored, with out-of-image pixels at the normalised zero.
        let aug = Augmentation(mean: [0], std: [1], cropPadding: 1, horizontalFlip: true)
        var seenFlip = false, seenShift = false
        for epoch in 0..<40 {
            let img = collect(BatchLoader(dataset: ds, batchSize: 1, augmentation: aug, shuffle: false, seed: 3,
                                          epoch: epoch, dropLast: false)).images
            var matched = false
            for flip in [false, true] { for dy in -1...1 { for dx in -1...1 {
                var ok = true
                for y in 0..<3 { for x in 0..<3 {
                    let sy = y + dy, sx = (flip ? 2 - x : x) + dx
                    let want: Float = (0..<3).contains(sy) && (0..<3).contains(sx) ? Float((sy * 3 + sx) * 10) / 255 : 0
                    if abs(img[y * 3 + x] - want) > 1e-6 { ok = false }
                } }
                if ok { matched = true; if flip { seenFlip = true }; if dy != 0 || dx != 0 { seenShift = true } }
            } } }
            #expect(matched, "epoch \(epoch): \(img)")
        }
        #expect(seenFlip && seenShift)
    }
}
