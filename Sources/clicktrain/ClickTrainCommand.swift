import ArgumentParser
import ClickTrainCore

struct ClickTrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "clicktrain",
        abstract: "Train convolutional networks and prune them while they train.",
        subcommands: [Train.self, Eval.self, Inspect.self, Report.self, Export.self, Bench.self])
}
