import Foundation
import Testing
import ClickTrainCUDA
import ClickTrainNN

/// NVRTC from the CUDA toolkit, or from NVIDIA's `nvidia-cuda-nvrtc` wheel (which `.ci/run`
/// installs): it compiles CUDA without a GPU or a driver.
func findNVRTC() -> NVRTC? {
    if let n = try? NVRTC() { return n }
    let probe = Process()
    probe.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    probe.arguments = ["python3", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
    let out = Pipe()
    probe.standardOutput = out
    probe.standardError = FileHandle.nullDevice
    guard (try? probe.run()) != nil else { return nil }
    probe.waitUntilExit()
    let site = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        .trimmingCharacters(in: .whitespacesAndNewlines)
    let paths = ["cu13", "cuda_nvrtc"].flatMap { dir in
        ["libnvrtc.so.13", "libnvrtc.so.12"].map { "\(site)/nvidia/\(dir)/lib/\($0)" }
    }
    return try? NVRTC(paths: paths)
}

let nvrtc = findNVRTC()

@Suite("CUDA backend without a GPU")
struct CUDAWithoutGPUTests {
    /// Every hand-written kernel compiles for the H100's architecture, and each kernel the
    /// device looks up is in the compiled source.
    @Test(.enabled(if: nvrtc != nil, "NVRTC not found: pip install nvidia-cuda-nvrtc"))
    func everyKernelCompilesForSm90() throws {
        let image = try nvrtc!.compile(KernelSource.source, name: "clicktrain_kernels.cu", arch: "sm_90")
        #expect(image.count > 1000)
        // A CUBIN is an ELF file whose symbol table names every kernel (extern "C").
        #expect(Array(image.prefix(4)) == [0x7F, 0x45, 0x4C, 0x46])
        let text = String(decoding: image.map { $0 == 0 ? 10 : $0 }, as: UTF8.self)
        for name in KernelSource.names {
            #expect(text.split(separator: "\n").contains { $0 == name }, "kernel \(name) missing from the CUBIN")
        }
    }

    @Test(.enabled(if: nvrtc != nil, "NVRTC not found: pip install nvidia-cuda-nvrtc"))
    func compileErrorsCarryNVRTCsLog() throws {
        #expect {
            _ = try nvrtc!.compile("extern \"C\" __global__ void k(float* x) { x[0] = undefined_name; }",
                                   name: "broken.cu", arch: "sm_90")
        } throws: { "\($0)".contains("undefined_name") && "\($0)".contains("broken.cu") }
    }

    /// Without the NVIDIA driver, opening the device names the library that is missing.
    @Test(.enabled(if: dlopen("libcuda.so.1", RTLD_NOW) == nil, "this machine has the NVIDIA driver"))
    func noDriverIsOneLineNamingIt() {
        #expect { _ = try CUDADevice() } throws: { e in
            let text = "\(e)"
            return e is CUDAUnavailable && text.contains("libcuda.so.1") && !text.contains("\n")
        }
    }

    /// Which layers the GPU mirrors, decided without a GPU: batch norm + ReLU as one node,
    /// every zoo model but the bottleneck ResNet, which is refused naming the layer.
    @Test func zooModelsMapOntoTheGPULayers() throws {
        let lenet = try GPUPlan.of(ModelZoo.make("lenet5", input: .fashionMNIST, seed: 1)).kinds
        #expect(lenet == ["conv", "relu", "maxpool", "conv", "relu", "maxpool", "flatten", "linear", "relu", "linear",
                          "relu", "linear"])
        let r20 = try GPUPlan.of(ModelZoo.make("resnet20", input: .cifar10, seed: 1)).kinds
        #expect(r20 == ["conv", "bn+relu"] + Array(repeating: "block", count: 3) + ["block+projection"]
                    + Array(repeating: "block", count: 2) + ["block+projection"] + Array(repeating: "block", count: 2)
                    + ["avgpool", "linear"])
        let vgg = try GPUPlan.of(ModelZoo.make("vgg11", input: .cifar10, seed: 1)).kinds
        #expect(vgg.filter { $0 == "bn+relu" }.count == 8 && vgg.filter { $0 == "maxpool" }.count == 5)
        #expect(!vgg.contains("bn") && !vgg.contains("relu"))
        _ = try GPUPlan.of(ModelZoo.make("resnet18", input: .cifar10, seed: 1))
        #expect { _ = try GPUPlan.of(ModelZoo.make("resnet50", input: .cifar10, seed: 1)) } throws: {
            "\($0)" == "--device cuda: layer 'layer1.0 (Bottleneck)' does not run on the GPU yet"
        }
    }
}
