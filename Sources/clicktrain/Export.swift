import ArgumentParser
import ClickTrainData
import ClickTrainTraining
import Foundation

struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a saved model as ONNX: input 'input' [N, C, H, W] in [0, 1], output 'logits' [N, classes].",
        discussion: """
            The data set's normalisation is the graph's first node and batch norm is folded into the \
            convolutions; a pruned model's weights are written as dense tensors with their zeros.
            """)

    @Argument(help: "A model.safetensors written by clicktrain train.") var modelFile: String
    @Option(help: "The ONNX file to write.") var onnx: String
    @Option(help: "Model name, when the file's metadata does not say it.") var model: String?
    @Option(help: "Data set whose normalisation the graph starts with. [default: the one the model was trained on]")
    var dataset: String?

    func run() throws {
        try reportingErrors {
            let saved = try SavedModel(path: modelFile, modelName: model)
            guard let kind = try dataset.map({ try DatasetKind(name: $0) }) ?? saved.dataset else {
                throw StateLoadError(path: modelFile, detail: "its metadata does not name the data set; pass --dataset")
            }
            let data = try ONNXExport.encode(saved.model, input: saved.input, normalization: kind.normalization,
                                             name: saved.name)
            try atomicWrite(data, to: onnx)
            print("wrote \(onnx) (\(saved.name), \(saved.input.channels)x\(saved.input.size)x\(saved.input.size) → \(saved.input.classes) logits, \(kind.rawValue) normalisation)")
        }
    }
}
