import ArgumentParser
import ClickTrainTraining
import Foundation

struct Report: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write RUN_DIR/report.html: curves, per-layer sparsity and pattern heat maps (offline, inline SVG).")

    @Argument(help: "A run folder written by clicktrain train.") var runDir: String

    func run() throws {
        try reportingErrors {
            let html = try RunReport.html(runDir: runDir)
            let path = runDir + "/report.html"
            try atomicWrite(Data(html.utf8), to: path)
            print("wrote \(path)")
        }
    }
}
