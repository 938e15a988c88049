import ClickTrainCore
import Foundation
import Synchronization

/// Folders the tests created, removed with the files beside them when the test process
/// exits (a test run writes hundreds of megabytes of run folders);
/// `CLICKTRAIN_KEEP_TEST_DIRS=1` keeps them.
private let createdDirectories = Mutex<[String]>([])

private func removeCreatedDirectories() {
    guard ProcessInfo.processInfo.environment["CLICKTRAIN_KEEP_TEST_DIRS"] != "1" else { return }
    let fm = FileManager.default
    let dirs = createdDirectories.withLock { $0 }
    // Tests also write files beside their folder (`<folder>.safetensors`, `<folder>.yaml`).
    let names = Set(dirs.map { ($0 as NSString).lastPathComponent })
    let tmp = NSTemporaryDirectory()
    for entry in (try? fm.contentsOfDirectory(atPath: tmp)) ?? [] {
        let stem = entry.split(separator: ".", maxSplits: 1).first.map(String.init) ?? entry
        if names.contains(stem) { try? fm.removeItem(atPath: (tmp as NSString).appendingPathComponent(entry)) }
    }
}

/// Small learnable image sets written in the real file formats, for tests that must not
/// depend on downloaded data.
public enum SyntheticData {
    /// A fresh temporary folder.
    public static func temporaryDirectory(_ tag: String) -> String {
        let dir = NSTemporaryDirectory() + "clicktrain-test-\(tag)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try! FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        createdDirectories.withLock { dirs in
            if dirs.isEmpty { atexit { removeCreatedDirectories() } }
            dirs.append(dir)
        }
        return dir
    }

    /// Images of `size`x`size` whose class k shows a bright 4x4 square at a class-specific
    /// place, plus noise: a task a small network learns in a few epochs.
    public static func images(count: Int, size: Int, channels: Int = 1, classes: Int = 10, seed: UInt64)
        -> (pixels: [UInt8], labels: [UInt8])
    {
        var rng = RNG(seed: seed)
        var px = [UInt8](repeating: 0, count: count * channels * size * size)
        var labels = [UInt8](repeating: 0, count: count)
        for i in 0..<count {
            let k = Int(rng.next() % UInt64(classes))
            labels[i] = UInt8(k)
            let cy = (k / 4) * (size / 4) + 1, cx = (k % 4) * (size / 4) + 1
            for c in 0..<channels {
                for y in 0..<size {
                    for x in 0..<size {
                        var v = Int(rng.next() % 60)
                        if y >= cy && y < cy + 4 && x >= cx && x < cx + 4 { v += 180 }
                        px[((i * channels + c) * size + y) * size + x] = UInt8(min(v, 255))
                    }
                }
            }
        }
        return (px, labels)
    }

    /// Writes a Fashion-MNIST-style folder (four IDX files, gzip or raw) and returns it.
    @discardableResult
    public static func writeIDXFolder(_ dir: String, train: Int, test: Int, size: Int, gzip: Bool = true,
                                      seed: UInt64 = 1, writer: (String, [Int], [UInt8]) throws -> Void) rethrows -> String {
        let ext = gzip ? ".gz" : ""
        for (prefix, n, s) in [("train", train, seed), ("t10k", test, seed &+ 1)] {
            let (px, lab) = images(count: n, size: size, seed: s)
            try writer("\(dir)/\(prefix)-images-idx3-ubyte\(ext)", [n, size, size], px)
            try writer("\(dir)/\(prefix)-labels-idx1-ubyte\(ext)", [n], lab)
        }
        return dir
    }
}
