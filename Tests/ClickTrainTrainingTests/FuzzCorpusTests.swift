import ClickTrainFuzzTargets
import Foundation
import Testing

/// Every committed fuzz seed and every input that once crashed a reader (`Fuzz/`), run
/// through the same reader functions libFuzzer drives: each must return (or throw), never crash.
@Suite("Fuzz corpus and regressions")
struct FuzzCorpusTests {
    static let root = repositoryRoot.appendingPathComponent("Fuzz")

    @Test(arguments: FuzzTarget.allCases)
    func replay(_ target: FuzzTarget) throws {
        var count = 0
        for folder in ["corpus", "regressions"] {
            let dir = FuzzCorpusTests.root.appendingPathComponent(folder).appendingPathComponent(target.rawValue)
            for name in try FileManager.default.contentsOfDirectory(atPath: dir.path) where !name.hasPrefix(".") {
                target.run(try Data(contentsOf: dir.appendingPathComponent(name)))
                count += 1
            }
        }
        #expect(count >= 2, "no inputs for \(target.rawValue) under \(FuzzCorpusTests.root.path)")
    }
}
