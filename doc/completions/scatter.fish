# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_scatter_global_optspecs
    string join \n v/verbose q/quiet log= h/help V/version
end

function __fish_scatter_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_scatter_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_scatter_using_subcommand
    set -l cmd (__fish_scatter_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c scatter -n "__fish_scatter_needs_command" -l log -d 'Where diagnostics go: stderr, syslog (facility cron), journald, or auto (journald when stderr is connected to the journal)' -r -f -a "stderr\t''
syslog\t''
journald\t''
auto\t'journald when stderr is connected to the journal, else stderr'"
complete -c scatter -n "__fish_scatter_needs_command" -s v -l verbose -d 'More detail on stderr: -v for debug, -vv for trace. RUST_LOG overrides'
complete -c scatter -n "__fish_scatter_needs_command" -s q -l quiet -d 'Only errors on stderr'
complete -c scatter -n "__fish_scatter_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c scatter -n "__fish_scatter_needs_command" -s V -l version -d 'Print version'
complete -c scatter -n "__fish_scatter_needs_command" -f -a "run" -d 'Start one task per instance, spread across the window'
complete -c scatter -n "__fish_scatter_needs_command" -f -a "status" -d 'Show runs in progress, tasks running now and each instance\'s last outcome'
complete -c scatter -n "__fish_scatter_needs_command" -f -a "pause" -d 'Hold instances back from the job\'s runs until resumed, or for a while'
complete -c scatter -n "__fish_scatter_needs_command" -f -a "resume" -d 'End pauses made by scatter pause'
complete -c scatter -n "__fish_scatter_needs_command" -f -a "completions" -d 'Print a shell completion script'
complete -c scatter -n "__fish_scatter_needs_command" -f -a "manpage" -d 'Print the man page (scatter.1), or write every page into a directory'
complete -c scatter -n "__fish_scatter_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c scatter -n "__fish_scatter_using_subcommand run" -l instances -d 'Directory whose subdirectories are the instances' -r -F
complete -c scatter -n "__fish_scatter_using_subcommand run" -l window -d 'Spread the starts across this long, e.g. 60s, 1.5s, 500ms, "1m 30s"' -r
complete -c scatter -n "__fish_scatter_using_subcommand run" -l lock-dir -d 'Lock base directory [default: /run/lock/scatter, else $XDG_RUNTIME_DIR/scatter]' -r -F
complete -c scatter -n "__fish_scatter_using_subcommand run" -l name -d 'Job name, used for the lock subdirectory [default: basename of --instances]' -r
complete -c scatter -n "__fish_scatter_using_subcommand run" -l order -d 'Start order: by name (bytewise) or by a stable hash of the id' -r -f -a "name\t'Bytewise by instance id'
hash\t'By a stable hash of the id, so an instance keeps nearly the same slot as others come and go'"
complete -c scatter -n "__fish_scatter_using_subcommand run" -l only -d 'Run only this instance, at once and without spreading (repeatable)' -r
complete -c scatter -n "__fish_scatter_using_subcommand run" -l format -d 'Output format of the dry-run plan and of the end-of-run report' -r -f -a "text\t''
json\t''"
complete -c scatter -n "__fish_scatter_using_subcommand run" -l max-concurrent -d 'At most N tasks of this run alive at once; due starts wait for a free slot' -r
complete -c scatter -n "__fish_scatter_using_subcommand run" -l timeout -d 'SIGTERM a task\'s whole process group after this long' -r
complete -c scatter -n "__fish_scatter_using_subcommand run" -l kill-after -d 'Grace period before SIGKILL, after a timeout or a stop signal (0: at once)' -r
complete -c scatter -n "__fish_scatter_using_subcommand run" -l shard -d 'Run only the instances of shard K of N (K from 0), by rendezvous hashing of the id' -r
complete -c scatter -n "__fish_scatter_using_subcommand run" -l shards -d 'Number of shards; this run\'s index then comes from JOB_COMPLETION_INDEX' -r
complete -c scatter -n "__fish_scatter_using_subcommand run" -l state-dir -d 'Where run and instance records go, for scatter status [default: /var/lib/scatter/NAME, else $XDG_STATE_HOME/scatter/NAME]' -r -F
complete -c scatter -n "__fish_scatter_using_subcommand run" -l keep-runs -d 'Keep this many run records in the state directory' -r
complete -c scatter -n "__fish_scatter_using_subcommand run" -l metrics-file -d 'At the end of the run, write Prometheus metrics here (textfile collector)' -r -F
complete -c scatter -n "__fish_scatter_using_subcommand run" -l output -d 'Task output: inherit, null, tag, dir=PATH or on-failure' -r
complete -c scatter -n "__fish_scatter_using_subcommand run" -l max-pressure -d 'Hold due starts while the PSI "some avg10" of RESOURCE (cpu, memory or io) is above PERCENT (repeatable, or comma-separated)' -r
complete -c scatter -n "__fish_scatter_using_subcommand run" -l pressure-source -d 'Where PSI is read: system (/proc/pressure), cgroup (scatter\'s own cgroup v2 directory), or a directory of RESOURCE.pressure files' -r
complete -c scatter -n "__fish_scatter_using_subcommand run" -l max-load -d 'Hold due starts while the 1-minute load average per online CPU is above LOAD' -r
complete -c scatter -n "__fish_scatter_using_subcommand run" -l max-defer -d 'How long past its slot a start may wait for pressure to fall [default: half the window]' -r
complete -c scatter -n "__fish_scatter_using_subcommand run" -l max-defer-action -d 'Past --max-defer: skip the start (outcome deferred, not a failure), or start it anyway with a warning' -r -f -a "skip\t'Skip it, with the outcome `deferred` (not a failure)'
start\t'Start it anyway, with a warning'"
complete -c scatter -n "__fish_scatter_using_subcommand run" -l catch-up -d 'Once behind schedule (after a stall, the cap or pressure), start at most FACTOR times the planned rate until caught up' -r
complete -c scatter -n "__fish_scatter_using_subcommand run" -l nice -d 'Nice value of each task\'s process group, -20 to 19 (scatter\'s own is unchanged)' -r
complete -c scatter -n "__fish_scatter_using_subcommand run" -l ionice -d 'I/O priority of each task\'s process group: idle, best-effort[:LEVEL] or realtime[:LEVEL], LEVEL 0 (highest) to 7, default 4' -r
complete -c scatter -n "__fish_scatter_using_subcommand run" -l include -d 'Run only instances whose id matches this shell-style glob (repeatable)' -r
complete -c scatter -n "__fish_scatter_using_subcommand run" -l exclude -d 'Leave out instances whose id matches this glob, such as \'lost+found\' (repeatable)' -r
complete -c scatter -n "__fish_scatter_using_subcommand run" -l backoff -d 'After k failures in a row, attempt an instance at most once per BASE*2^(k-1), up to MAX (default 1h), e.g. 1m,1h' -r
complete -c scatter -n "__fish_scatter_using_subcommand run" -l report -d 'Report every failure (every), or only changes (changes): an instance starts failing, recovers, a widespread failure begins or ends' -r -f -a "every\t'Every failure, every run (cron mails each failing run)'
changes\t'Only changes: an instance starts failing, is still failing after --remind, recovers; a widespread failure begins or ends'"
complete -c scatter -n "__fish_scatter_using_subcommand run" -l failures-before-report -d 'An instance is failing (for --report changes and --on-change) after N failures in a row' -r
complete -c scatter -n "__fish_scatter_using_subcommand run" -l remind -d 'Report again every DURATION that an instance (or a widespread failure) is still failing [default: never]' -r
complete -c scatter -n "__fish_scatter_using_subcommand run" -l on-change -d 'Run this executable once per change, after the run, with no arguments and no shell; SCATTER_EVENT and others describe the change' -r -F
complete -c scatter -n "__fish_scatter_using_subcommand run" -l hook-timeout -d 'Kill an --on-change hook\'s whole process group after this long' -r
complete -c scatter -n "__fish_scatter_using_subcommand run" -l url -d 'Instead of a command: make this HTTP request for each instance, from scatter itself ({} and {id}, percent-encoded, only in the path and query)' -r
complete -c scatter -n "__fish_scatter_using_subcommand run" -l method -d 'With --url: GET (the default; POST with --data), HEAD or POST' -r -f -a "GET\t''
HEAD\t''
POST\t''"
complete -c scatter -n "__fish_scatter_using_subcommand run" -l header -d 'With --url: send this header too, \'Name: value\' (repeatable; {} percent-encoded)' -r
complete -c scatter -n "__fish_scatter_using_subcommand run" -l data -d 'With --url: send this body, as curl\'s --data ({} percent-encoded, %20 not +)' -r
complete -c scatter -n "__fish_scatter_using_subcommand run" -l cacert -d 'With an https:// --url: trust the CA certificates in this PEM file instead of the system\'s' -r -F
complete -c scatter -n "__fish_scatter_using_subcommand run" -l log -d 'Where diagnostics go: stderr, syslog (facility cron), journald, or auto (journald when stderr is connected to the journal)' -r -f -a "stderr\t''
syslog\t''
journald\t''
auto\t'journald when stderr is connected to the journal, else stderr'"
complete -c scatter -n "__fish_scatter_using_subcommand run" -l dry-run -d 'Print the plan and exit: no locks, no tasks, no waiting'
complete -c scatter -n "__fish_scatter_using_subcommand run" -l detach -d 'Exit right after the last start; tasks keep running under their locks'
complete -c scatter -n "__fish_scatter_using_subcommand run" -l with-state -d 'With --dry-run: read the state directory and show what a real run would do now (paused and backed-off instances)'
complete -c scatter -n "__fish_scatter_using_subcommand run" -s v -l verbose -d 'More detail on stderr: -v for debug, -vv for trace. RUST_LOG overrides'
complete -c scatter -n "__fish_scatter_using_subcommand run" -s q -l quiet -d 'Only errors on stderr'
complete -c scatter -n "__fish_scatter_using_subcommand run" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c scatter -n "__fish_scatter_using_subcommand status" -l name -d 'Job name, as given to scatter run (takes precedence over --instances)' -r
complete -c scatter -n "__fish_scatter_using_subcommand status" -l instances -d 'The instances directory of the job; its basename is the job name' -r -F
complete -c scatter -n "__fish_scatter_using_subcommand status" -l state-dir -d 'State directory [default: /var/lib/scatter/NAME, else $XDG_STATE_HOME/scatter/NAME]' -r -F
complete -c scatter -n "__fish_scatter_using_subcommand status" -l lock-dir -d 'Lock base directory [default: the one the last run used]' -r -F
complete -c scatter -n "__fish_scatter_using_subcommand status" -l format -d 'Output format' -r -f -a "text\t''
json\t''"
complete -c scatter -n "__fish_scatter_using_subcommand status" -l sort -d 'List the costliest instances first: by the CPU time, peak memory (rss) or run time of their last task, with those figures' -r -f -a "cpu\t'User and system CPU time of its last task'
rss\t'Peak resident memory of its last task'
duration\t'Run time of its last task'"
complete -c scatter -n "__fish_scatter_using_subcommand status" -l top -d 'List only the first N instances' -r
complete -c scatter -n "__fish_scatter_using_subcommand status" -l log -d 'Where diagnostics go: stderr, syslog (facility cron), journald, or auto (journald when stderr is connected to the journal)' -r -f -a "stderr\t''
syslog\t''
journald\t''
auto\t'journald when stderr is connected to the journal, else stderr'"
complete -c scatter -n "__fish_scatter_using_subcommand status" -s v -l verbose -d 'More detail on stderr: -v for debug, -vv for trace. RUST_LOG overrides'
complete -c scatter -n "__fish_scatter_using_subcommand status" -s q -l quiet -d 'Only errors on stderr'
complete -c scatter -n "__fish_scatter_using_subcommand status" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c scatter -n "__fish_scatter_using_subcommand pause" -l name -d 'Job name, as given to scatter run (takes precedence over --instances)' -r
complete -c scatter -n "__fish_scatter_using_subcommand pause" -l instances -d 'The instances directory of the job; its basename is the job name' -r -F
complete -c scatter -n "__fish_scatter_using_subcommand pause" -l state-dir -d 'State directory [default: /var/lib/scatter/NAME, else $XDG_STATE_HOME/scatter/NAME]' -r -F
complete -c scatter -n "__fish_scatter_using_subcommand pause" -l for -d 'End the pause by itself after this long (default: when resumed)' -r
complete -c scatter -n "__fish_scatter_using_subcommand pause" -l reason -d 'Why, for scatter status and the --on-change hook' -r
complete -c scatter -n "__fish_scatter_using_subcommand pause" -l log -d 'Where diagnostics go: stderr, syslog (facility cron), journald, or auto (journald when stderr is connected to the journal)' -r -f -a "stderr\t''
syslog\t''
journald\t''
auto\t'journald when stderr is connected to the journal, else stderr'"
complete -c scatter -n "__fish_scatter_using_subcommand pause" -l force -d 'Use a state directory no run has written yet, and (pause) ids that are not instances yet'
complete -c scatter -n "__fish_scatter_using_subcommand pause" -s v -l verbose -d 'More detail on stderr: -v for debug, -vv for trace. RUST_LOG overrides'
complete -c scatter -n "__fish_scatter_using_subcommand pause" -s q -l quiet -d 'Only errors on stderr'
complete -c scatter -n "__fish_scatter_using_subcommand pause" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c scatter -n "__fish_scatter_using_subcommand resume" -l name -d 'Job name, as given to scatter run (takes precedence over --instances)' -r
complete -c scatter -n "__fish_scatter_using_subcommand resume" -l instances -d 'The instances directory of the job; its basename is the job name' -r -F
complete -c scatter -n "__fish_scatter_using_subcommand resume" -l state-dir -d 'State directory [default: /var/lib/scatter/NAME, else $XDG_STATE_HOME/scatter/NAME]' -r -F
complete -c scatter -n "__fish_scatter_using_subcommand resume" -l log -d 'Where diagnostics go: stderr, syslog (facility cron), journald, or auto (journald when stderr is connected to the journal)' -r -f -a "stderr\t''
syslog\t''
journald\t''
auto\t'journald when stderr is connected to the journal, else stderr'"
complete -c scatter -n "__fish_scatter_using_subcommand resume" -l force -d 'Use a state directory no run has written yet, and (pause) ids that are not instances yet'
complete -c scatter -n "__fish_scatter_using_subcommand resume" -l all -d 'End every pause of the job'
complete -c scatter -n "__fish_scatter_using_subcommand resume" -s v -l verbose -d 'More detail on stderr: -v for debug, -vv for trace. RUST_LOG overrides'
complete -c scatter -n "__fish_scatter_using_subcommand resume" -s q -l quiet -d 'Only errors on stderr'
complete -c scatter -n "__fish_scatter_using_subcommand resume" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c scatter -n "__fish_scatter_using_subcommand completions" -l log -d 'Where diagnostics go: stderr, syslog (facility cron), journald, or auto (journald when stderr is connected to the journal)' -r -f -a "stderr\t''
syslog\t''
journald\t''
auto\t'journald when stderr is connected to the journal, else stderr'"
complete -c scatter -n "__fish_scatter_using_subcommand completions" -s v -l verbose -d 'More detail on stderr: -v for debug, -vv for trace. RUST_LOG overrides'
complete -c scatter -n "__fish_scatter_using_subcommand completions" -s q -l quiet -d 'Only errors on stderr'
complete -c scatter -n "__fish_scatter_using_subcommand completions" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c scatter -n "__fish_scatter_using_subcommand manpage" -l dir -d 'Write scatter.1 and one page per subcommand here instead' -r -F
complete -c scatter -n "__fish_scatter_using_subcommand manpage" -l log -d 'Where diagnostics go: stderr, syslog (facility cron), journald, or auto (journald when stderr is connected to the journal)' -r -f -a "stderr\t''
syslog\t''
journald\t''
auto\t'journald when stderr is connected to the journal, else stderr'"
complete -c scatter -n "__fish_scatter_using_subcommand manpage" -s v -l verbose -d 'More detail on stderr: -v for debug, -vv for trace. RUST_LOG overrides'
complete -c scatter -n "__fish_scatter_using_subcommand manpage" -s q -l quiet -d 'Only errors on stderr'
complete -c scatter -n "__fish_scatter_using_subcommand manpage" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c scatter -n "__fish_scatter_using_subcommand help; and not __fish_seen_subcommand_from run status pause resume completions manpage help" -f -a "run" -d 'Start one task per instance, spread across the window'
complete -c scatter -n "__fish_scatter_using_subcommand help; and not __fish_seen_subcommand_from run status pause resume completions manpage help" -f -a "status" -d 'Show runs in progress, tasks running now and each instance\'s last outcome'
complete -c scatter -n "__fish_scatter_using_subcommand help; and not __fish_seen_subcommand_from run status pause resume completions manpage help" -f -a "pause" -d 'Hold instances back from the job\'s runs until resumed, or for a while'
complete -c scatter -n "__fish_scatter_using_subcommand help; and not __fish_seen_subcommand_from run status pause resume completions manpage help" -f -a "resume" -d 'End pauses made by scatter pause'
complete -c scatter -n "__fish_scatter_using_subcommand help; and not __fish_seen_subcommand_from run status pause resume completions manpage help" -f -a "completions" -d 'Print a shell completion script'
complete -c scatter -n "__fish_scatter_using_subcommand help; and not __fish_seen_subcommand_from run status pause resume completions manpage help" -f -a "manpage" -d 'Print the man page (scatter.1), or write every page into a directory'
complete -c scatter -n "__fish_scatter_using_subcommand help; and not __fish_seen_subcommand_from run status pause resume completions manpage help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
