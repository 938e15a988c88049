import ClickTrainCodegen
import Foundation

// Writes the generated pattern-kernel source: `swift run generate-kernels [PATH]`.
let path = CommandLine.arguments.count > 1
    ? CommandLine.arguments[1]
    : "Sources/ClickTrainSparse/Generated/PatternTiles.swift"
do {
    try PatternKernelSource.source().write(toFile: path, atomically: true, encoding: .utf8)
    print("wrote \(path)")
} catch {
    FileHandle.standardError.write(Data("generate-kernels: cannot write \(path): \(error)\n".utf8))
    exit(1)
}
