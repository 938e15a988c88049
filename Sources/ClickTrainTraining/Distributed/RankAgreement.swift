import ClickTrainCore
import ClickTrainNN
import Foundation

extension Trainer {
    /// Data parallelism keeps one model on every rank: the same weights, masks and method
    /// state (pattern choices, importance, PruneTrain's rebuilt shapes). Every rank hashes
    /// what it holds after the epoch's methods ran; ranks that differ end the run before
    /// anything is saved, naming them.
    public func checkRanksAgree() throws {
        guard let group, group.size > 1 else { return }
        var h = FNV1a()
        for (name, entry) in model.stateDict() {
            h.add(name)
            switch entry {
            case .parameter(let p):
                h.add(p.value)
                if let m = p.mask { h.add(m) }
            case .buffer(let t): h.add(t)
            case .counter(let c): h.add(String(c.value))
            }
        }
        for method in methods {
            let ck = try method.checkpoint()
            for key in ck.metadata.keys.sorted() { h.add(key + "=" + ck.metadata[key]!) }
            for (name, t) in ck.tensors { h.add(name); h.add(t) }
        }
        let all = group.allgather(h.value)
        let differing = all.indices.filter { all[$0] != all[0] }
        if !differing.isEmpty {
            throw TrainingError.ranksDiffer(epoch: completedEpochs, ranks: differing)
        }
    }
}

/// 64-bit FNV-1a over bytes.
struct FNV1a {
    private(set) var value: UInt64 = 0xcbf2_9ce4_8422_2325

    mutating func add(_ bytes: UnsafeRawBufferPointer) {
        for b in bytes { value = (value ^ UInt64(b)) &* 0x100_0000_01b3 }
    }

    mutating func add(_ s: String) {
        var s = s
        s.withUTF8 { add(UnsafeRawBufferPointer($0)) }
        value = value &* 0x100_0000_01b3  // a 0 byte ends the string
    }

    mutating func add(_ t: Tensor) {
        add(UnsafeRawBufferPointer(start: t.data, count: t.count * MemoryLayout<Float>.size))
    }
}
