from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

CONTROL: KernelChannel
DESCRIPTOR: _descriptor.FileDescriptor
IOPUB: KernelChannel
SHELL: KernelChannel
STDIN: KernelChannel

class DownloadChunk(_message.Message):
    __slots__ = ["data"]
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class DownloadRequest(_message.Message):
    __slots__ = ["follow_symlinks", "name", "path"]
    FOLLOW_SYMLINKS_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    follow_symlinks: bool
    name: str
    path: str
    def __init__(self, path: _Optional[str] = ..., follow_symlinks: bool = ..., name: _Optional[str] = ...) -> None: ...

class ExecExit(_message.Message):
    __slots__ = ["duration_ms", "error", "exit_code", "signal", "timed_out"]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    TIMED_OUT_FIELD_NUMBER: _ClassVar[int]
    duration_ms: float
    error: str
    exit_code: int
    signal: int
    timed_out: bool
    def __init__(self, exit_code: _Optional[int] = ..., signal: _Optional[int] = ..., timed_out: bool = ..., duration_ms: _Optional[float] = ..., error: _Optional[str] = ...) -> None: ...

class ExecInput(_message.Message):
    __slots__ = ["close_stdin", "resize", "signal", "start", "stdin"]
    CLOSE_STDIN_FIELD_NUMBER: _ClassVar[int]
    RESIZE_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    STDIN_FIELD_NUMBER: _ClassVar[int]
    close_stdin: bool
    resize: TtySize
    signal: int
    start: ExecRequest
    stdin: bytes
    def __init__(self, start: _Optional[_Union[ExecRequest, _Mapping]] = ..., stdin: _Optional[bytes] = ..., close_stdin: bool = ..., signal: _Optional[int] = ..., resize: _Optional[_Union[TtySize, _Mapping]] = ...) -> None: ...

class ExecOutput(_message.Message):
    __slots__ = ["exit", "started", "stderr", "stdout"]
    EXIT_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    STDERR_FIELD_NUMBER: _ClassVar[int]
    STDOUT_FIELD_NUMBER: _ClassVar[int]
    exit: ExecExit
    started: ExecStarted
    stderr: bytes
    stdout: bytes
    def __init__(self, started: _Optional[_Union[ExecStarted, _Mapping]] = ..., stdout: _Optional[bytes] = ..., stderr: _Optional[bytes] = ..., exit: _Optional[_Union[ExecExit, _Mapping]] = ...) -> None: ...

class ExecRequest(_message.Message):
    __slots__ = ["argv", "cwd", "env", "stdin", "timeout_s", "tty", "user"]
    class EnvEntry(_message.Message):
        __slots__ = ["key", "value"]
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ARGV_FIELD_NUMBER: _ClassVar[int]
    CWD_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    STDIN_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    TTY_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    argv: _containers.RepeatedScalarFieldContainer[str]
    cwd: str
    env: _containers.ScalarMap[str, str]
    stdin: bool
    timeout_s: float
    tty: TtySize
    user: str
    def __init__(self, argv: _Optional[_Iterable[str]] = ..., env: _Optional[_Mapping[str, str]] = ..., cwd: _Optional[str] = ..., user: _Optional[str] = ..., timeout_s: _Optional[float] = ..., stdin: bool = ..., tty: _Optional[_Union[TtySize, _Mapping]] = ...) -> None: ...

class ExecStarted(_message.Message):
    __slots__ = ["exec_id", "pid"]
    EXEC_ID_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    exec_id: str
    pid: int
    def __init__(self, exec_id: _Optional[str] = ..., pid: _Optional[int] = ...) -> None: ...

class FileEntry(_message.Message):
    __slots__ = ["mode", "mtime", "name", "path", "size", "target", "type"]
    MODE_FIELD_NUMBER: _ClassVar[int]
    MTIME_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    mode: int
    mtime: float
    name: str
    path: str
    size: int
    target: str
    type: str
    def __init__(self, name: _Optional[str] = ..., path: _Optional[str] = ..., type: _Optional[str] = ..., size: _Optional[int] = ..., mode: _Optional[int] = ..., mtime: _Optional[float] = ..., target: _Optional[str] = ...) -> None: ...

class GuestMetrics(_message.Message):
    __slots__ = ["cpu_busy_s", "cpu_total_s", "disk_total_bytes", "disk_used_bytes", "mem_available_bytes", "mem_total_bytes", "processes", "uptime_s"]
    CPU_BUSY_S_FIELD_NUMBER: _ClassVar[int]
    CPU_TOTAL_S_FIELD_NUMBER: _ClassVar[int]
    DISK_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    DISK_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEM_AVAILABLE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEM_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    PROCESSES_FIELD_NUMBER: _ClassVar[int]
    UPTIME_S_FIELD_NUMBER: _ClassVar[int]
    cpu_busy_s: float
    cpu_total_s: float
    disk_total_bytes: int
    disk_used_bytes: int
    mem_available_bytes: int
    mem_total_bytes: int
    processes: int
    uptime_s: float
    def __init__(self, cpu_busy_s: _Optional[float] = ..., cpu_total_s: _Optional[float] = ..., mem_total_bytes: _Optional[int] = ..., mem_available_bytes: _Optional[int] = ..., processes: _Optional[int] = ..., uptime_s: _Optional[float] = ..., disk_total_bytes: _Optional[int] = ..., disk_used_bytes: _Optional[int] = ...) -> None: ...

class KernelBatch(_message.Message):
    __slots__ = ["messages"]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[KernelFrames]
    def __init__(self, messages: _Optional[_Iterable[_Union[KernelFrames, _Mapping]]] = ...) -> None: ...

class KernelClientMessage(_message.Message):
    __slots__ = ["connect", "message"]
    CONNECT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    connect: KernelConnect
    message: KernelFrames
    def __init__(self, connect: _Optional[_Union[KernelConnect, _Mapping]] = ..., message: _Optional[_Union[KernelFrames, _Mapping]] = ...) -> None: ...

class KernelConnect(_message.Message):
    __slots__ = ["identity", "kernel_id"]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    KERNEL_ID_FIELD_NUMBER: _ClassVar[int]
    identity: bytes
    kernel_id: str
    def __init__(self, kernel_id: _Optional[str] = ..., identity: _Optional[bytes] = ...) -> None: ...

class KernelExit(_message.Message):
    __slots__ = ["exit_code", "output_tail", "signal"]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TAIL_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    exit_code: int
    output_tail: str
    signal: int
    def __init__(self, exit_code: _Optional[int] = ..., signal: _Optional[int] = ..., output_tail: _Optional[str] = ...) -> None: ...

class KernelFrames(_message.Message):
    __slots__ = ["channel", "frames"]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    channel: KernelChannel
    frames: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, channel: _Optional[_Union[KernelChannel, str]] = ..., frames: _Optional[_Iterable[bytes]] = ...) -> None: ...

class KernelInfo(_message.Message):
    __slots__ = ["connection_file", "cwd", "kernel_id", "key", "pid", "signature_scheme", "start_ms", "started"]
    CONNECTION_FILE_FIELD_NUMBER: _ClassVar[int]
    CWD_FIELD_NUMBER: _ClassVar[int]
    KERNEL_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_SCHEME_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    START_MS_FIELD_NUMBER: _ClassVar[int]
    connection_file: str
    cwd: str
    kernel_id: str
    key: bytes
    pid: int
    signature_scheme: str
    start_ms: float
    started: bool
    def __init__(self, kernel_id: _Optional[str] = ..., key: _Optional[bytes] = ..., signature_scheme: _Optional[str] = ..., pid: _Optional[int] = ..., started: bool = ..., start_ms: _Optional[float] = ..., connection_file: _Optional[str] = ..., cwd: _Optional[str] = ...) -> None: ...

class KernelRef(_message.Message):
    __slots__ = ["kernel_id"]
    KERNEL_ID_FIELD_NUMBER: _ClassVar[int]
    kernel_id: str
    def __init__(self, kernel_id: _Optional[str] = ...) -> None: ...

class KernelReply(_message.Message):
    __slots__ = ["found"]
    FOUND_FIELD_NUMBER: _ClassVar[int]
    found: bool
    def __init__(self, found: bool = ...) -> None: ...

class KernelServerMessage(_message.Message):
    __slots__ = ["batch", "connected", "exited", "info", "message"]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    EXITED_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    batch: KernelBatch
    connected: bool
    exited: KernelExit
    info: KernelInfo
    message: KernelFrames
    def __init__(self, info: _Optional[_Union[KernelInfo, _Mapping]] = ..., connected: bool = ..., message: _Optional[_Union[KernelFrames, _Mapping]] = ..., exited: _Optional[_Union[KernelExit, _Mapping]] = ..., batch: _Optional[_Union[KernelBatch, _Mapping]] = ...) -> None: ...

class KernelStartRequest(_message.Message):
    __slots__ = ["kernel_id", "process", "restart", "start_timeout_s"]
    KERNEL_ID_FIELD_NUMBER: _ClassVar[int]
    PROCESS_FIELD_NUMBER: _ClassVar[int]
    RESTART_FIELD_NUMBER: _ClassVar[int]
    START_TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    kernel_id: str
    process: ExecRequest
    restart: bool
    start_timeout_s: float
    def __init__(self, kernel_id: _Optional[str] = ..., process: _Optional[_Union[ExecRequest, _Mapping]] = ..., restart: bool = ..., start_timeout_s: _Optional[float] = ...) -> None: ...

class KernelStopRequest(_message.Message):
    __slots__ = ["grace_s", "kernel_id"]
    GRACE_S_FIELD_NUMBER: _ClassVar[int]
    KERNEL_ID_FIELD_NUMBER: _ClassVar[int]
    grace_s: float
    kernel_id: str
    def __init__(self, kernel_id: _Optional[str] = ..., grace_s: _Optional[float] = ...) -> None: ...

class KillReply(_message.Message):
    __slots__ = ["found"]
    FOUND_FIELD_NUMBER: _ClassVar[int]
    found: bool
    def __init__(self, found: bool = ...) -> None: ...

class KillRequest(_message.Message):
    __slots__ = ["exec_id", "signal"]
    EXEC_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    exec_id: str
    signal: int
    def __init__(self, exec_id: _Optional[str] = ..., signal: _Optional[int] = ...) -> None: ...

class ListReply(_message.Message):
    __slots__ = ["entries"]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[FileEntry]
    def __init__(self, entries: _Optional[_Iterable[_Union[FileEntry, _Mapping]]] = ...) -> None: ...

class ListRequest(_message.Message):
    __slots__ = ["path"]
    PATH_FIELD_NUMBER: _ClassVar[int]
    path: str
    def __init__(self, path: _Optional[str] = ...) -> None: ...

class MetricsRequest(_message.Message):
    __slots__ = []
    def __init__(self) -> None: ...

class PingReply(_message.Message):
    __slots__ = ["agent_version", "uptime_s"]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    UPTIME_S_FIELD_NUMBER: _ClassVar[int]
    agent_version: str
    uptime_s: float
    def __init__(self, agent_version: _Optional[str] = ..., uptime_s: _Optional[float] = ...) -> None: ...

class PingRequest(_message.Message):
    __slots__ = []
    def __init__(self) -> None: ...

class PrepareSnapshotReply(_message.Message):
    __slots__ = ["mem_available_bytes"]
    MEM_AVAILABLE_BYTES_FIELD_NUMBER: _ClassVar[int]
    mem_available_bytes: int
    def __init__(self, mem_available_bytes: _Optional[int] = ...) -> None: ...

class PrepareSnapshotRequest(_message.Message):
    __slots__ = []
    def __init__(self) -> None: ...

class Ready(_message.Message):
    __slots__ = ["agent_version", "boot_ms", "cpus", "kernel", "memory_bytes"]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    BOOT_MS_FIELD_NUMBER: _ClassVar[int]
    CPUS_FIELD_NUMBER: _ClassVar[int]
    KERNEL_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    agent_version: str
    boot_ms: float
    cpus: int
    kernel: str
    memory_bytes: int
    def __init__(self, agent_version: _Optional[str] = ..., boot_ms: _Optional[float] = ..., kernel: _Optional[str] = ..., cpus: _Optional[int] = ..., memory_bytes: _Optional[int] = ...) -> None: ...

class RestoreReply(_message.Message):
    __slots__ = ["agent_version", "kernel", "restore_ms", "uptime_s"]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    KERNEL_FIELD_NUMBER: _ClassVar[int]
    RESTORE_MS_FIELD_NUMBER: _ClassVar[int]
    UPTIME_S_FIELD_NUMBER: _ClassVar[int]
    agent_version: str
    kernel: str
    restore_ms: float
    uptime_s: float
    def __init__(self, agent_version: _Optional[str] = ..., kernel: _Optional[str] = ..., uptime_s: _Optional[float] = ..., restore_ms: _Optional[float] = ...) -> None: ...

class RestoreRequest(_message.Message):
    __slots__ = ["entropy", "hostname", "machine_id", "unix_time_ns"]
    ENTROPY_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    MACHINE_ID_FIELD_NUMBER: _ClassVar[int]
    UNIX_TIME_NS_FIELD_NUMBER: _ClassVar[int]
    entropy: bytes
    hostname: str
    machine_id: str
    unix_time_ns: int
    def __init__(self, entropy: _Optional[bytes] = ..., hostname: _Optional[str] = ..., machine_id: _Optional[str] = ..., unix_time_ns: _Optional[int] = ...) -> None: ...

class ShutdownReply(_message.Message):
    __slots__ = []
    def __init__(self) -> None: ...

class ShutdownRequest(_message.Message):
    __slots__ = []
    def __init__(self) -> None: ...

class TtySize(_message.Message):
    __slots__ = ["cols", "rows"]
    COLS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    cols: int
    rows: int
    def __init__(self, rows: _Optional[int] = ..., cols: _Optional[int] = ...) -> None: ...

class UploadReply(_message.Message):
    __slots__ = ["bytes", "entries", "path"]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    bytes: int
    entries: int
    path: str
    def __init__(self, path: _Optional[str] = ..., entries: _Optional[int] = ..., bytes: _Optional[int] = ...) -> None: ...

class UploadRequest(_message.Message):
    __slots__ = ["data", "finish", "start"]
    DATA_FIELD_NUMBER: _ClassVar[int]
    FINISH_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    finish: bool
    start: UploadStart
    def __init__(self, start: _Optional[_Union[UploadStart, _Mapping]] = ..., data: _Optional[bytes] = ..., finish: bool = ...) -> None: ...

class UploadStart(_message.Message):
    __slots__ = ["dest", "overwrite"]
    DEST_FIELD_NUMBER: _ClassVar[int]
    OVERWRITE_FIELD_NUMBER: _ClassVar[int]
    dest: str
    overwrite: bool
    def __init__(self, dest: _Optional[str] = ..., overwrite: bool = ...) -> None: ...

class KernelChannel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []
