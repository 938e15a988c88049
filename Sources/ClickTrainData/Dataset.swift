import Foundation

/// The data sets ClickTrain reads.
public enum DatasetKind: String, CaseIterable, Sendable, Codable {
    case fashionMNIST = "fashion-mnist"
    case mnist
    case cifar10
    case cifar100

    public init(name: String) throws {
        let n = name.lowercased().replacingOccurrences(of: "_", with: "-")
        switch n {
        case "fashion-mnist", "fashionmnist", "fmnist": self = .fashionMNIST
        case "mnist": self = .mnist
        case "cifar10", "cifar-10": self = .cifar10
        case "cifar100", "cifar-100": self = .cifar100
        default: throw DataError.unknownDataset(name: name)
        }
    }

    /// Where Debian's package puts it, when there is one.
    public var defaultDirectory: String {
        switch self {
        case .fashionMNIST: return "/usr/share/datasets/fashion-mnist"
        case .mnist: return "/usr/share/datasets/mnist"
        case .cifar10: return "data/cifar-10-batches-bin"
        case .cifar100: return "data/cifar-100-binary"
        }
    }

    /// What a user should do when the folder is missing.
    public var installHint: String {
        switch self {
        case .fashionMNIST: return "Install it with: sudo apt-get install dataset-fashion-mnist (or pass --data DIR)."
        case .mnist: return "Put the four MNIST IDX files (train-images-idx3-ubyte[.gz], …) there, or pass --data DIR."
        case .cifar10: return "Put the CIFAR-10 binary version (data_batch_1.bin … test_batch.bin) there, or pass --data DIR."
        case .cifar100: return "Put the CIFAR-100 binary version (train.bin, test.bin) there, or pass --data DIR."
        }
    }

    public var classes: Int { self == .cifar100 ? 100 : 10 }

    /// Per-channel mean and standard deviation of the training set (pixels in [0, 1]).
    public var normalization: (mean: [Float], std: [Float]) {
        switch self {
        case .fashionMNIST: return ([0.2860], [0.3530])
        case .mnist: return ([0.1307], [0.3081])
        case .cifar10: return ([0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616])
        case .cifar100: return ([0.5071, 0.4865, 0.4409], [0.2673, 0.2564, 0.2762])
        }
    }

    /// Horizontal flips make sense for natural images, not for digits or clothes.
    public var flipByDefault: Bool { self == .cifar10 || self == .cifar100 }
}

/// Images as bytes (NCHW, one byte per pixel and channel) with their class labels.
public struct ImageDataset: Sendable {
    public var channels: Int
    public var height: Int
    public var width: Int
    public var classes: Int
    public var pixels: [UInt8]
    public var labels: [Int32]

    public init(channels: Int, height: Int, width: Int, classes: Int, pixels: [UInt8], labels: [Int32]) {
        precondition(pixels.count == labels.count * channels * height * width, "ImageDataset: pixel count mismatch")
        self.channels = channels
        self.height = height
        self.width = width
        self.classes = classes
        self.pixels = pixels
        self.labels = labels
    }

    public var count: Int { labels.count }
    public var imageSize: Int { channels * height * width }

    /// Loads the training or test split of a data set from a folder.
    public static func load(_ kind: DatasetKind, directory: String, train: Bool) throws -> ImageDataset {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDir), isDir.boolValue else {
            throw DataError.missingDirectory(path: directory, hint: kind.installHint)
        }
        switch kind {
        case .fashionMNIST, .mnist:
            let prefix = train ? "train" : "t10k"
            let images = try findFile(directory, "\(prefix)-images-idx3-ubyte", kind)
            let labels = try findFile(directory, "\(prefix)-labels-idx1-ubyte", kind)
            return try fromIDX(images: images, labels: labels, classes: kind.classes)
        case .cifar10:
            let files = train ? (1...5).map { "data_batch_\($0).bin" } : ["test_batch.bin"]
            return try CIFAR.read(files.map { try findFile(directory, $0, kind) }, labelBytes: 1, classes: 10)
        case .cifar100:
            return try CIFAR.read([findFile(directory, train ? "train.bin" : "test.bin", kind)], labelBytes: 2,
                                  classes: 100)
        }
    }

    static func findFile(_ dir: String, _ name: String, _ kind: DatasetKind) throws -> String {
        for candidate in [name, name + ".gz"] {
            let p = (dir as NSString).appendingPathComponent(candidate)
            if FileManager.default.fileExists(atPath: p) { return p }
        }
        throw DataError.missingFile(path: (dir as NSString).appendingPathComponent(name) + "[.gz]", hint: kind.installHint)
    }

    /// Pairs an IDX image file [N, H, W] with an IDX label file [N].
    public static func fromIDX(images: String, labels: String, classes: Int) throws -> ImageDataset {
        let img = try IDX.read(images)
        let lab = try IDX.read(labels)
        guard img.dims.count == 3 else {
            throw DataError.badHeader(path: images, detail: "images need 3 dimensions [N, H, W], found \(img.dims)")
        }
        guard lab.dims.count == 1 else {
            throw DataError.badHeader(path: labels, detail: "labels need 1 dimension [N], found \(lab.dims)")
        }
        guard img.dims[0] == lab.dims[0] else {
            throw DataError.corrupt(path: labels, detail: "\(lab.dims[0]) labels for \(img.dims[0]) images in \(images)")
        }
        if let bad = lab.bytes.first(where: { Int($0) >= classes }) {
            throw DataError.corrupt(path: labels, detail: "label \(bad) outside 0..<\(classes)")
        }
        return ImageDataset(channels: 1, height: img.dims[1], width: img.dims[2], classes: classes, pixels: img.bytes,
                            labels: lab.bytes.map { Int32($0) })
    }
}

/// The CIFAR-10/100 binary format: records of label byte(s) then 3072 bytes (R, G, B
/// planes of 32x32). CIFAR-100 records carry a coarse then a fine label; the fine is used.
public enum CIFAR {
    public static func read(_ paths: [String], labelBytes: Int, classes: Int) throws -> ImageDataset {
        var pixels: [UInt8] = [], labels: [Int32] = []
        for path in paths {
            guard let data = FileManager.default.contents(atPath: path) else {
                throw DataError.missingFile(path: path, hint: "")
            }
            try parse(data, path: path, labelBytes: labelBytes, classes: classes, pixels: &pixels, labels: &labels)
        }
        return ImageDataset(channels: 3, height: 32, width: 32, classes: classes, pixels: pixels, labels: labels)
    }

    /// Appends the records of one file's bytes to `pixels` and `labels`.
    public static func parse(_ data: Data, path: String, labelBytes: Int, classes: Int, pixels: inout [UInt8],
                             labels: inout [Int32]) throws {
        let record = labelBytes + 3072
        guard data.count > 0, data.count % record == 0 else {
            let whole = data.count / record
            throw DataError.truncated(path: path, expectedBytes: (whole + 1) * record, actualBytes: data.count)
        }
        let n = data.count / record
        pixels.reserveCapacity(pixels.count + n * 3072)
        try data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
            let b = raw.bindMemory(to: UInt8.self)
            for r in 0..<n {
                let base = r * record
                let label = Int(b[base + labelBytes - 1])
                guard label < classes else {
                    throw DataError.corrupt(path: path, detail: "record \(r) has label \(label), expected < \(classes)")
                }
                labels.append(Int32(label))
                pixels.append(contentsOf: b[(base + labelBytes)..<(base + record)])
            }
        }
    }

    /// Writes records in the same format (tests, exports).
    public static func write(_ path: String, images: [UInt8], labels: [Int32], labelBytes: Int) throws {
        var out: [UInt8] = []
        for (i, l) in labels.enumerated() {
            if labelBytes == 2 { out.append(0) }
            out.append(UInt8(l))
            out += images[(i * 3072)..<((i + 1) * 3072)]
        }
        try Data(out).write(to: URL(fileURLWithPath: path))
    }
}
