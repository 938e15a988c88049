import ClickTrainData
import ClickTrainTraining
import Foundation

/// The readers of user-supplied files, each as one function of arbitrary bytes: what
/// libFuzzer drives (`scripts/fuzz.sh`) and what the test suite replays on the committed
/// corpus and on every input that once crashed. A reader may throw on bad input; it must
/// never crash, hang or read out of bounds.
public enum FuzzTarget: String, CaseIterable, Sendable {
    /// `SafeTensors.decode`: checkpoints, saved models, `--init` files; and a pattern file's expansion.
    case safetensors
    /// `IDX.decompress` (raw or gzip) and `IDX.parse`: what `IDX.read` does to a file.
    case idx
    /// `CIFAR.parse` as CIFAR-10 (one label byte) and as CIFAR-100 (two).
    case cifar
    /// `RunConfig.decode` of the bytes as YAML text, and the unused-key scan.
    case config

    /// Runs the reader on `data`; errors it throws are the expected answer to bad input.
    public func run(_ data: Data) {
        switch self {
        case .safetensors:
            if let st = try? SafeTensors.decode(data, path: "fuzz.safetensors") {
                _ = try? PatternFile.expand(st.tensors, metadata: st.metadata, path: "fuzz.safetensors")
            }
        case .idx:
            _ = try? IDX.parse(IDX.decompress([UInt8](data), path: "fuzz.idx"), path: "fuzz.idx")
        case .cifar:
            var pixels: [UInt8] = [], labels: [Int32] = []
            try? CIFAR.parse(data, path: "fuzz.bin", labelBytes: 1, classes: 10, pixels: &pixels, labels: &labels)
            try? CIFAR.parse(data, path: "fuzz.bin", labelBytes: 2, classes: 100, pixels: &pixels, labels: &labels)
        case .config:
            let text = String(decoding: data, as: UTF8.self)
            _ = try? RunConfig.decode(yaml: text, source: "fuzz.yaml")
            _ = RunConfig.unusedKeys(yaml: text)
        }
    }
}
