import ArgumentParser
import ClickTrainCore
import ClickTrainData
import ClickTrainNN
import ClickTrainTraining
import Foundation

struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Evaluate a saved model.safetensors on a data set's test split.")

    @Argument(help: "A model.safetensors written by clicktrain train.") var modelFile: String
    @Option(help: "Model name, when the file's metadata does not say it.") var model: String?
    @Option(help: "Data set. [default: the one the model was trained on]") var dataset: String?
    @Option(help: "Folder holding the data set's files. [default: the data set's usual location]") var data: String?
    @Option(help: "Images per batch.") var batchSize = 250
    @Option(help: "Threads for every kernel. [default: all cores]") var threads: Int?
    @Option(help: deviceHelp) var device: DeviceKind = .cpu
    @Flag(help: "Print one JSON object.") var json = false

    func run() throws {
        try reportingErrors {
            try requireFlag(threads.map { $0 >= 1 } ?? true, "--threads must be at least 1, got \(threads ?? 0)")
            try requireFlag(batchSize >= 1, "--batch-size must be at least 1, got \(batchSize)")
            if let t = threads { Threads.set(t) } else { Threads.set(Threads.count) }
            let gpu = try openDevice(device)
            let probe = try SavedModel(path: modelFile, modelName: model)
            let kind = try dataset.map { try DatasetKind(name: $0) } ?? probe.dataset ?? .fashionMNIST
            let test = try ImageDataset.load(kind, directory: data ?? kind.defaultDirectory, train: false)
            guard test.classes <= probe.input.classes else {
                throw StateLoadError(path: modelFile, detail: "the model has \(probe.input.classes) classes, \(kind.rawValue) has \(test.classes)")
            }
            let inp = ModelInput(channels: test.channels, size: test.height, classes: probe.input.classes)
            guard inp == probe.input else {
                throw StateLoadError(path: modelFile, detail: "the model takes \(probe.input.channels)x\(probe.input.size)x\(probe.input.size) images, \(kind.rawValue) has \(inp.channels)x\(inp.size)x\(inp.size)")
            }
            let net = probe.model
            let name = probe.name
            let norm = kind.normalization
            let t0 = Date()
            let augmentation = Augmentation(mean: norm.mean, std: norm.std)
            let (loss, acc): (Double, Double)
            if let gpu {
                let e = try engine(on: gpu, model: net, optimizer: SGD(parameters: net.parameters(), learningRate: 0),
                                   input: inp, maxBatch: batchSize)
                try e.upload()
                (loss, acc) = try Trainer.evaluate(on: e, dataset: test, batchSize: batchSize, augmentation: augmentation)
            } else {
                (loss, acc) = Trainer.evaluate(model: net, dataset: test, batchSize: batchSize, augmentation: augmentation)
            }
            let secs = Date().timeIntervalSince(t0)
            if json {
                print("{\"model\":\"\(ModelZoo.canonicalName(name))\",\"dataset\":\"\(kind.rawValue)\",\"images\":\(test.count),\"test_loss\":\(loss),\"test_acc\":\(acc),\"seconds\":\(secs)}")
            } else {
                print(String(format: "%@ on %@ test (%d images): loss %.4f, accuracy %.2f%% (%.1f s)",
                             ModelZoo.canonicalName(name), kind.rawValue, test.count, loss, 100 * acc, secs))
            }
        }
    }
}
