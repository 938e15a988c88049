import ClickTrainData
import ClickTrainPruning
import ClickTrainSparse
import Foundation

/// A value as a YAML file or a command line gives it: one scalar, a list or a mapping.
public enum ConfigInput: Sendable {
    case scalar(String)
    case list([String])
    case map([(String, String)])
}

/// A scalar type a configuration key can hold: parsed from text, written back as a person
/// would write it (`0.1`, not `1.00000001490116e-1`).
public protocol ConfigScalar {
    init?(configText: String)
    var configText: String { get }
    /// What the help shows as the value, e.g. `<n>`.
    static var valueName: String { get }
}

extension Int: ConfigScalar {
    public init?(configText s: String) { self.init(s) }
    public var configText: String { String(self) }
    public static var valueName: String { "<n>" }
}

extension UInt64: ConfigScalar {
    public init?(configText s: String) { self.init(s) }
    public var configText: String { String(self) }
    public static var valueName: String { "<n>" }
}

extension Double: ConfigScalar {
    public init?(configText s: String) { self.init(s) }
    public var configText: String { "\(self)" }
    public static var valueName: String { "<x>" }
}

extension Float: ConfigScalar {
    public init?(configText s: String) { self.init(s) }
    public var configText: String { "\(self)" }
    public static var valueName: String { "<x>" }
}

extension Bool: ConfigScalar {
    public init?(configText s: String) {
        switch s.lowercased() {
        case "true", "yes", "on": self = true
        case "false", "no", "off": self = false
        default: return nil
        }
    }
    public var configText: String { self ? "true" : "false" }
    public static var valueName: String { "on|off" }
}

extension String: ConfigScalar {
    public init?(configText s: String) { self = s }
    public var configText: String { self }
    public static var valueName: String { "<text>" }
}

/// An enumeration written by its raw value.
public protocol ConfigEnum: ConfigScalar, CaseIterable, RawRepresentable where RawValue == String {}

extension ConfigEnum {
    public init?(configText s: String) { self.init(rawValue: s) }
    public var configText: String { rawValue }
    public static var valueName: String { "<" + allCases.map(\.rawValue).joined(separator: "|") + ">" }
}

extension MethodKind: ConfigEnum {}
extension ScheduleKind: ConfigEnum {}
extension PatternPoolKind: ConfigEnum {}
extension PatternPruningConfig.PoolScope: ConfigEnum {}
extension GradientDistribution: ConfigEnum {}
extension ThresholdRule: ConfigEnum {}
extension DatasetKind: ConfigEnum {
    public init?(configText s: String) { try? self.init(name: s) }
}

/// One configuration key, defined once: its YAML key, its command-line flag, its help, how
/// it is read and how `config.yaml` writes it (nil where it does not apply to the run).
public struct ConfigOption {
    /// The YAML key (nil: command line only).
    public let key: String?
    /// The command-line name without the dashes (nil: YAML only).
    public let flag: String?
    /// The value's placeholder in the help; nil for a flag that takes no value.
    public let valueName: String?
    /// What a flag without a value sets.
    let flagValue: String?
    public let help: String
    /// Shown as `[default: …]`.
    public let defaultText: String?
    let read: (inout RunConfig, ConfigInput) throws -> Void
    let write: ((RunConfig) -> ConfigInput?)?

    /// The name an error about it shows: the flag or the key.
    func name(commandLine: Bool) -> String { commandLine ? "--" + (flag ?? key ?? "") : key ?? flag ?? "" }
}

struct ConfigValueError: Error {
    let detail: String
}

extension ConfigOption {
    static func scalar(_ input: ConfigInput) throws -> String {
        guard case .scalar(let s) = input else { throw ConfigValueError(detail: "expected a single value") }
        return s
    }

    static func parse<T: ConfigScalar>(_ input: ConfigInput, as: T.Type) throws -> T {
        let s = try scalar(input)
        guard let v = T(configText: s) else { throw ConfigValueError(detail: "expected \(T.valueName), got '\(s)'") }
        return v
    }

    /// A key holding one scalar, written when `applies` says so.
    static func value<T: ConfigScalar & Equatable>(
        _ key: String, _ kp: WritableKeyPath<RunConfig, T>, flag: String?, _ help: String,
        valueName: String? = nil, when applies: @escaping (RunConfig) -> Bool = { _ in true }
    ) -> ConfigOption {
        ConfigOption(key: key, flag: flag, valueName: valueName ?? T.valueName, flagValue: nil, help: help,
                     defaultText: RunConfig()[keyPath: kp].configText,
                     read: { c, v in c[keyPath: kp] = try parse(v, as: T.self) },
                     write: { c in applies(c) ? .scalar(c[keyPath: kp].configText) : nil })
    }

    /// A key whose absence means a default derived elsewhere (`defaultText` says which).
    static func optional<T: ConfigScalar>(
        _ key: String, _ kp: WritableKeyPath<RunConfig, T?>, flag: String?, _ help: String, default d: String,
        when applies: @escaping (RunConfig) -> Bool = { _ in true }
    ) -> ConfigOption {
        ConfigOption(key: key, flag: flag, valueName: T.valueName, flagValue: nil, help: help, defaultText: d,
                     read: { c, v in
                         if case .scalar(let s) = v, ["null", "~"].contains(s) { c[keyPath: kp] = nil; return }
                         c[keyPath: kp] = try parse(v, as: T.self)
                     },
                     write: { c in applies(c) ? c[keyPath: kp].map { .scalar($0.configText) } : nil })
    }

    /// A boolean key whose command-line form is a flag without a value that sets `flagValue`.
    static func flag(_ key: String, _ kp: WritableKeyPath<RunConfig, Bool>, flag: String, sets flagValue: Bool,
                     _ help: String, when applies: @escaping (RunConfig) -> Bool = { _ in true }) -> ConfigOption {
        ConfigOption(key: key, flag: flag, valueName: nil, flagValue: flagValue.configText, help: help,
                     defaultText: nil,
                     read: { c, v in c[keyPath: kp] = try parse(v, as: Bool.self) },
                     write: { c in applies(c) ? .scalar(c[keyPath: kp].configText) : nil })
    }
}
