// swift-tools-version:6.0
import PackageDescription

import Foundation

// Our own SIMD/scalar loops need a target CPU with AVX2+FMA, or every FMA becomes a
// library call. The build targets AVX-512 (skylake-avx512: AVX-512 F/CD/BW/DQ/VL, with the AVX512
// condition that turns on the 512-bit pattern-conv tiles) when the building machine has
// it, else haswell (AVX2 + FMA), which runs on every x86 server of the last decade.
// CLICKTRAIN_TARGET_CPU overrides the choice (`haswell` for a binary that must also run on
// machines without AVX-512, e.g. the GPU machine); change it with `--manifest-cache none`,
// since SwiftPM caches the evaluated manifest. unsafeFlags work because this is the root package.
let avx512CPUs: Set<String> = ["skylake-avx512", "cascadelake", "icelake-server", "sapphirerapids",
                               "znver4", "znver5"]
let targetCPU: String = {
    if let cpu = ProcessInfo.processInfo.environment["CLICKTRAIN_TARGET_CPU"], !cpu.isEmpty { return cpu }
    guard let info = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
          let flagsLine = info.split(separator: "\n").first(where: { $0.hasPrefix("flags") }) else { return "haswell" }
    let flags = Set(flagsLine.split(separator: " ").map(String.init))
    return ["avx512f", "avx512vl", "avx512bw", "avx512dq", "avx512cd"].allSatisfy(flags.contains) ? "skylake-avx512" : "haswell"
}()
let cpuFlags: [SwiftSetting] = [
    .unsafeFlags(["-target-cpu", targetCPU], .when(platforms: [.linux])),
] + (avx512CPUs.contains(targetCPU) ? [.define("AVX512", .when(platforms: [.linux]))] : [])

let package = Package(
    name: "ClickTrain",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "clicktrain", targets: ["clicktrain"]),
        // What an application imports: every library below but the MPI one.
        .library(name: "ClickTrain", targets: ["ClickTrain"]),
        .library(name: "ClickTrainCore", targets: ["ClickTrainCore"]),
        .library(name: "ClickTrainSparse", targets: ["ClickTrainSparse"]),
        .library(name: "ClickTrainNN", targets: ["ClickTrainNN"]),
        .library(name: "ClickTrainPruning", targets: ["ClickTrainPruning"]),
        .library(name: "ClickTrainData", targets: ["ClickTrainData"]),
        .library(name: "ClickTrainTraining", targets: ["ClickTrainTraining"]),
        .library(name: "ClickTrainDistributed", targets: ["ClickTrainDistributed"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "5.0.1"),
        // `swift package generate-documentation --target ClickTrain` (the DocC catalog).
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.4.0"),
    ],
    targets: [
        .systemLibrary(name: "CBLAS", path: "Sources/CBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CDNNL", path: "Sources/CDNNL", providers: [.apt(["libdnnl-dev"])]),
        .systemLibrary(name: "CZlib", path: "Sources/CZlib", providers: [.apt(["zlib1g-dev"])]),
        // Open MPI, linked by ClickTrainDistributed alone: a program that trains in one process
        // does not need it.
        .systemLibrary(name: "CMPI", path: "Sources/CMPI", pkgConfig: "ompi-c",
                       providers: [.apt(["libopenmpi-dev", "openmpi-bin"])]),
        .target(name: "ClickTrainCore", dependencies: ["CBLAS", "CDNNL"], swiftSettings: cpuFlags),
        .target(name: "ClickTrainSparse", dependencies: ["ClickTrainCore"], swiftSettings: cpuFlags),
        .target(name: "ClickTrainNN", dependencies: ["ClickTrainCore", "ClickTrainSparse"], swiftSettings: cpuFlags),
        .target(name: "ClickTrainData", dependencies: ["ClickTrainCore", "CZlib"], swiftSettings: cpuFlags),
        .target(name: "ClickTrainPruning", dependencies: ["ClickTrainCore", "ClickTrainNN"], swiftSettings: cpuFlags),
        .target(
            name: "ClickTrainTraining",
            dependencies: ["ClickTrainCore", "ClickTrainSparse", "ClickTrainNN", "ClickTrainPruning", "ClickTrainData",
                           .product(name: "Yams", package: "Yams")],
            swiftSettings: cpuFlags),
        .target(name: "ClickTrain",
                dependencies: ["ClickTrainCore", "ClickTrainData", "ClickTrainNN", "ClickTrainPruning",
                               "ClickTrainSparse", "ClickTrainTraining"],
                swiftSettings: cpuFlags),
        .target(name: "ClickTrainDistributed", dependencies: ["ClickTrainCore", "CMPI"], swiftSettings: cpuFlags),
        // The GPU backend: CUDA, NVRTC, cuBLAS and cuDNN are loaded at run time (dlopen), so
        // nothing NVIDIA is needed to build, test or run on the CPU.
        .target(name: "ClickTrainCUDA", dependencies: ["ClickTrainCore", "ClickTrainNN", "ClickTrainTraining"],
                swiftSettings: cpuFlags),
        .executableTarget(
            name: "clicktrain",
            dependencies: [
                "ClickTrainCore", "ClickTrainSparse", "ClickTrainNN", "ClickTrainPruning", "ClickTrainData",
                "ClickTrainTraining", "ClickTrainDistributed", "ClickTrainCUDA",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: cpuFlags),
        // The file readers as fuzz targets (scripts/fuzz.sh), replayed by the tests.
        .target(name: "ClickTrainFuzzTargets", dependencies: ["ClickTrainData", "ClickTrainTraining"],
                swiftSettings: cpuFlags),
        .executableTarget(name: "clicktrain-fuzz", dependencies: ["ClickTrainFuzzTargets"], swiftSettings: cpuFlags),
        // The generator of Sources/ClickTrainSparse/Generated (swift run generate-kernels).
        .target(name: "ClickTrainCodegen"),
        .executableTarget(name: "generate-kernels", dependencies: ["ClickTrainCodegen"]),
        .target(name: "ClickTrainTestSupport", dependencies: ["ClickTrainCore"],
                path: "Tests/ClickTrainTestSupport", swiftSettings: cpuFlags),
        .testTarget(name: "ClickTrainTests", dependencies: ["ClickTrain", "ClickTrainTestSupport"], swiftSettings: cpuFlags),
        .testTarget(name: "ClickTrainCoreTests", dependencies: ["ClickTrainCore", "ClickTrainTestSupport"],
                    swiftSettings: cpuFlags),
        .testTarget(name: "ClickTrainSparseTests",
                    dependencies: ["ClickTrainSparse", "ClickTrainCodegen", "ClickTrainTestSupport"],
                    swiftSettings: cpuFlags),
        .testTarget(name: "ClickTrainPruningTests", dependencies: ["ClickTrainPruning", "ClickTrainTestSupport"],
                    swiftSettings: cpuFlags),
        .testTarget(name: "ClickTrainNNTests", dependencies: ["ClickTrainNN", "ClickTrainTestSupport"],
                    swiftSettings: cpuFlags),
        .testTarget(name: "ClickTrainDataTests", dependencies: ["ClickTrainData", "ClickTrainTestSupport"],
                    swiftSettings: cpuFlags),
        .testTarget(name: "ClickTrainCUDATests", dependencies: ["ClickTrainCUDA", "ClickTrainTestSupport"],
                    swiftSettings: cpuFlags),
        .testTarget(name: "ClickTrainTrainingTests",
                    dependencies: ["ClickTrainTraining", "ClickTrainTestSupport", "ClickTrainFuzzTargets"],
                    swiftSettings: cpuFlags),
    ]
)
