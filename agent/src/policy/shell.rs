//! SSH exec commands read as the server's shell would split them: words
//! with quotes and escapes removed, commands separated by `;`, `&`, `&&`,
//! `||`, `|` and newlines, subshells and groups, command substitutions
//! (`$( )`, backticks) and the scripts of `sh -c '...'` (any shell, `su -c`,
//! `eval`) read as commands of their own, wrappers (`sudo`, `env`, `nohup`,
//! `timeout`, `exec`, `xargs`, ...) seen through, and output redirections
//! noted. Rules match a program and its options on any of those commands.
//! What the splitter cannot read (an unterminated quote, a program given
//! by an expansion) is reported, and rules about programs then match (fail
//! closed).

/// One simple command.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimpleCommand {
    /// The program and its arguments, quotes removed.
    pub words: Vec<String>,
    /// Which words contain an expansion (`$x`, `$( )`, backticks, globs):
    /// their value is only known when the command runs.
    pub dynamic: Vec<bool>,
    /// Output redirections: (operator, target word, target is dynamic).
    pub writes: Vec<(String, String, bool)>,
}

impl SimpleCommand {
    /// The program's base name (`/usr/bin/rm` -> `rm`), unless it is dynamic.
    pub fn program(&self) -> Option<&str> {
        let w = self.words.first()?;
        if self.dynamic.first().copied().unwrap_or(false) {
            return None;
        }
        Some(w.rsplit('/').next().unwrap_or(w))
    }

    /// The arguments before a `--` (options can only be there).
    fn option_words(&self) -> impl Iterator<Item = (&String, bool)> {
        self.words
            .iter()
            .zip(self.dynamic.iter().copied())
            .skip(1)
            .take_while(|(w, _)| w.as_str() != "--")
    }

    /// Whether `option` is given: `--long` (or `--long=value`), a
    /// multi-letter single-dash word as written (`-delete`), or a letter
    /// `-x` found in any cluster of short options (`-rf`, `-fr`). A dynamic
    /// argument may be any option.
    pub fn has_option(&self, option: &str) -> bool {
        self.option_words().any(|(w, dynamic)| {
            if dynamic {
                return true;
            }
            if let Some(long) = option.strip_prefix("--") {
                return w
                    .strip_prefix("--")
                    .is_some_and(|g| g == long || g.starts_with(&format!("{long}=")));
            }
            match option.strip_prefix('-') {
                Some(letter) if letter.chars().count() == 1 => {
                    w.starts_with('-')
                        && !w.starts_with("--")
                        && w.len() > 1
                        && w.get(1..)
                            .and_then(|l| l.split('=').next())
                            .is_some_and(|c| c.contains(letter))
                }
                Some(_) => w == option,
                None => w == option,
            }
        })
    }
}

/// An exec command, split.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Script {
    pub commands: Vec<SimpleCommand>,
    /// Why it could not be read completely, if it could not.
    pub unreadable: Option<String>,
}

/// Shells: `NAME -c SCRIPT` runs SCRIPT; without -c (and without a script
/// file) they read commands from their input.
pub const SHELLS: &[&str] = &[
    "sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "fish", "csh", "tcsh", "rbash",
];

/// How deep scripts inside scripts are read.
const MAX_DEPTH: u8 = 6;

/// Splits `line` as a POSIX shell would.
pub fn split(line: &str) -> Script {
    let mut s = Script::default();
    parse(line, 0, &mut s);
    s
}

fn unreadable(s: &mut Script, why: String) {
    s.unreadable.get_or_insert(why);
}

/// Reads one script into `out`.
fn parse(line: &str, depth: u8, out: &mut Script) {
    if depth > MAX_DEPTH {
        unreadable(out, "scripts nested too deep".into());
        return;
    }
    let chars: Vec<char> = line.chars().collect();
    let mut i = 0;
    let mut cur = SimpleCommand::default();
    let mut word = String::new();
    let mut in_word = false;
    let mut dynamic = false;
    let mut pending_redirect: Option<String> = None;
    let finish_word = |cur: &mut SimpleCommand,
                       word: &mut String,
                       in_word: &mut bool,
                       dynamic: &mut bool,
                       pending: &mut Option<String>| {
        if !*in_word {
            return;
        }
        match pending.take() {
            Some(op) => cur.writes.push((op, std::mem::take(word), *dynamic)),
            None => {
                cur.words.push(std::mem::take(word));
                cur.dynamic.push(*dynamic);
            }
        }
        *in_word = false;
        *dynamic = false;
    };
    macro_rules! end_command {
        () => {{
            finish_word(
                &mut cur,
                &mut word,
                &mut in_word,
                &mut dynamic,
                &mut pending_redirect,
            );
            if pending_redirect.take().is_some() {
                unreadable(out, "a redirection without a target".into());
            }
            let done = std::mem::take(&mut cur);
            if !done.words.is_empty() || !done.writes.is_empty() {
                command(done, depth, out);
            }
        }};
    }
    while let Some(&c) = chars.get(i) {
        match c {
            '\\' => {
                match chars.get(i + 1) {
                    Some('\n') => {}
                    Some(&n) => {
                        word.push(n);
                        in_word = true;
                    }
                    None => {}
                }
                i += 2;
                continue;
            }
            '\'' => {
                let Some(end) = chars
                    .get(i + 1..)
                    .unwrap_or_default()
                    .iter()
                    .position(|&x| x == '\'')
                else {
                    unreadable(out, "an unterminated single quote".into());
                    return;
                };
                word.extend(chars.get(i + 1..i + 1 + end).unwrap_or_default());
                in_word = true;
                i += end + 2;
                continue;
            }
            '"' => {
                in_word = true;
                i += 1;
                loop {
                    match chars.get(i) {
                        None => {
                            unreadable(out, "an unterminated double quote".into());
                            return;
                        }
                        Some('"') => {
                            i += 1;
                            break;
                        }
                        Some('\\') => {
                            match chars.get(i + 1) {
                                // An escaped newline joins lines.
                                Some('\n') => {}
                                Some(&n) if "$`\"\\".contains(n) => word.push(n),
                                Some(&n) => {
                                    word.push('\\');
                                    word.push(n);
                                }
                                None => {}
                            }
                            i += 2;
                        }
                        Some('$') | Some('`') => {
                            dynamic = true;
                            i = expansion(&chars, i, &mut word, depth, out);
                        }
                        Some(&x) => {
                            word.push(x);
                            i += 1;
                        }
                    }
                }
                continue;
            }
            '$' | '`' => {
                dynamic = true;
                in_word = true;
                i = expansion(&chars, i, &mut word, depth, out);
                continue;
            }
            '*' | '?' | '[' => {
                // A glob: its expansion depends on the server's files.
                dynamic = true;
                in_word = true;
                word.push(c);
            }
            '#' if !in_word => {
                // A comment to the end of the line.
                let end = chars
                    .get(i..)
                    .unwrap_or_default()
                    .iter()
                    .position(|&x| x == '\n')
                    .unwrap_or(chars.len().saturating_sub(i));
                i += end;
                continue;
            }
            ' ' | '\t' => {
                finish_word(
                    &mut cur,
                    &mut word,
                    &mut in_word,
                    &mut dynamic,
                    &mut pending_redirect,
                );
            }
            '\n' | ';' | '&' | '|' | '(' | ')' | '{' | '}'
                if !(c == '{' || c == '}') || !in_word =>
            {
                // `2>&1` and `&>` are redirections, not separators.
                if c == '&' && chars.get(i + 1) == Some(&'>') {
                    finish_word(
                        &mut cur,
                        &mut word,
                        &mut in_word,
                        &mut dynamic,
                        &mut pending_redirect,
                    );
                    let op = if chars.get(i + 2) == Some(&'>') {
                        "&>>"
                    } else {
                        "&>"
                    };
                    pending_redirect = Some(op.into());
                    i += op.len();
                    continue;
                }
                end_command!();
            }
            '>' | '<' => {
                // `N>` where the word so far is a file descriptor number.
                let fd_prefix =
                    in_word && !word.is_empty() && word.chars().all(|d| d.is_ascii_digit());
                if fd_prefix {
                    word.clear();
                    in_word = false;
                } else {
                    finish_word(
                        &mut cur,
                        &mut word,
                        &mut in_word,
                        &mut dynamic,
                        &mut pending_redirect,
                    );
                }
                let mut op = c.to_string();
                let mut j = i + 1;
                while let Some(&n) = chars.get(j) {
                    if (n == '>' && c == '>') || n == '|' || (n == '<' && c == '<') || n == '&' {
                        op.push(n);
                        j += 1;
                    } else {
                        break;
                    }
                }
                i = j;
                if op.ends_with('&') {
                    // `>&2`, `<&0`: a descriptor, not a file (`>&file` is rare).
                    while chars
                        .get(i)
                        .is_some_and(|d| d.is_ascii_digit() || *d == '-')
                    {
                        i += 1;
                    }
                    continue;
                }
                if op.starts_with("<<") {
                    // A here-document: the command's input, not a file.
                    unreadable_heredoc(&chars, &mut i);
                    continue;
                }
                if c == '>' {
                    pending_redirect = Some(op);
                } else {
                    // An input file: read as a word we discard.
                    pending_redirect = Some("<".into());
                }
                continue;
            }
            _ => {
                word.push(c);
                in_word = true;
            }
        }
        i += 1;
    }
    end_command!();
}

/// Skips a here-document's delimiter word (its body follows the line and
/// is the command's input).
fn unreadable_heredoc(chars: &[char], i: &mut usize) {
    while chars.get(*i).is_some_and(|c| *c == ' ' || *c == '-') {
        *i += 1;
    }
    while chars
        .get(*i)
        .is_some_and(|c| !c.is_whitespace() && !";&|".contains(*c))
    {
        *i += 1;
    }
    // The body, to the end, is the command's input (interlock does not
    // look for the delimiter line).
    *i = chars.len();
}

/// A `$...` or backtick expansion at `i`: command substitutions are read as
/// scripts; the word keeps the raw text. Returns the index after it.
fn expansion(chars: &[char], i: usize, word: &mut String, depth: u8, out: &mut Script) -> usize {
    let rest = chars.get(i..).unwrap_or_default();
    if rest.first() == Some(&'`') {
        let Some(end) = rest
            .get(1..)
            .unwrap_or_default()
            .iter()
            .position(|&c| c == '`')
        else {
            unreadable(out, "an unterminated backtick".into());
            return chars.len();
        };
        let inner: String = rest.get(1..1 + end).unwrap_or_default().iter().collect();
        parse(&inner, depth + 1, out);
        word.push_str("`...`");
        return i + end + 2;
    }
    if rest.get(1) == Some(&'(') {
        let mut level = 0;
        let mut quote: Option<char> = None;
        for (k, &c) in rest.iter().enumerate().skip(1) {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '\'' | '"') => quote = Some(c),
                (None, '(') => level += 1,
                (None, ')') => {
                    level -= 1;
                    if level == 0 {
                        let inner: String = rest.get(2..k).unwrap_or_default().iter().collect();
                        // `$(( ))` is arithmetic; its commands still run.
                        parse(inner.trim_matches(|c| c == '(' || c == ')'), depth + 1, out);
                        word.push_str("$(...)");
                        return i + k + 1;
                    }
                }
                _ => {}
            }
        }
        unreadable(out, "an unterminated $(".into());
        return chars.len();
    }
    // $name, ${...}, $1, $?: a value interlock cannot know.
    let mut k = 1;
    if rest.get(1) == Some(&'{') {
        while rest.get(k).is_some_and(|c| *c != '}') {
            k += 1;
        }
        k += 1;
    } else {
        while rest
            .get(k)
            .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_')
        {
            k += 1;
        }
        if k == 1 && rest.get(1).is_some() {
            k = 2;
        }
    }
    let text: String = rest
        .get(..k.min(rest.len()))
        .unwrap_or_default()
        .iter()
        .collect();
    word.push_str(&text);
    i + k
}

/// Wrappers that run the rest of their arguments as a command, with the
/// options of each that take a value.
const WRAPPERS: &[(&str, &[&str])] = &[
    (
        "sudo",
        &[
            "-u", "-g", "-C", "-h", "-p", "-r", "-t", "-U", "-D", "-R", "-T",
        ],
    ),
    ("doas", &["-u", "-C"]),
    (
        "env",
        &["-u", "-C", "-S", "--unset", "--chdir", "--split-string"],
    ),
    ("nohup", &[]),
    ("nice", &["-n", "--adjustment"]),
    ("ionice", &["-c", "-n", "-p", "-P", "-u"]),
    ("timeout", &["-s", "-k", "--signal", "--kill-after"]),
    ("exec", &["-a"]),
    ("command", &[]),
    ("builtin", &[]),
    ("stdbuf", &["-i", "-o", "-e"]),
    ("setsid", &[]),
    ("time", &["-f", "-o"]),
    (
        "xargs",
        &[
            "-a",
            "-d",
            "-E",
            "-e",
            "-I",
            "-i",
            "-L",
            "-l",
            "-n",
            "-P",
            "-s",
            "--arg-file",
            "--delimiter",
            "--max-args",
            "--max-procs",
            "--replace",
        ],
    ),
    ("chroot", &[]),
    ("watch", &["-n", "-d", "--interval"]),
    ("flock", &["-w", "-E", "-c"]),
    ("runuser", &["-u", "-g", "-G", "-c"]),
    ("busybox", &[]),
];

/// Records `c` and what it runs.
fn command(mut c: SimpleCommand, depth: u8, out: &mut Script) {
    // Leading assignments (`FOO=1 cmd`) and shell keywords are not the program.
    while let Some(first) = c.words.first() {
        let assignment = first.split_once('=').is_some_and(|(n, _)| {
            !n.is_empty() && n.chars().all(|x| x.is_ascii_alphanumeric() || x == '_')
        });
        let keyword = matches!(
            first.as_str(),
            "if" | "then"
                | "else"
                | "elif"
                | "fi"
                | "do"
                | "done"
                | "while"
                | "until"
                | "!"
                | "{"
                | "}"
        );
        if !(assignment || keyword) {
            break;
        }
        c.words.remove(0);
        c.dynamic.remove(0);
    }
    if c.words.is_empty() {
        if !c.writes.is_empty() {
            out.commands.push(c);
        }
        return;
    }
    if c.dynamic.first().copied().unwrap_or(false) {
        let first = c.words.first().cloned().unwrap_or_default();
        unreadable(
            out,
            format!("the program is not known before it runs (`{first}`)"),
        );
    }
    let program = c.program().unwrap_or_default().to_string();
    // `sh -c SCRIPT`, `su -c SCRIPT`, `eval WORDS`: the script's commands.
    let script = if SHELLS.contains(&program.as_str()) || program == "su" || program == "runuser" {
        script_of(&c, "-c")
    } else if program == "eval" {
        Some((
            c.words.get(1..).unwrap_or_default().join(" "),
            c.dynamic.get(1..).unwrap_or_default().iter().any(|d| *d),
        ))
    } else {
        None
    };
    if let Some((text, dynamic)) = script {
        if dynamic {
            unreadable(out, format!("{program} runs a script built when it runs"));
        }
        parse(&text, depth + 1, out);
    }
    // Wrappers: the command they run counts too.
    let inner = WRAPPERS
        .iter()
        .find(|(w, _)| *w == program)
        .map(|(_, takes_value)| {
            let mut k = 1;
            while let Some(w) = c.words.get(k) {
                let is_assignment = program == "env" && w.contains('=') && !w.starts_with('-');
                if w == "--" {
                    k += 1;
                    break;
                }
                if !(w.starts_with('-') || is_assignment) {
                    // timeout's duration, nice's old `-5` style are options or values
                    if program == "timeout" && w.chars().next().is_some_and(|d| d.is_ascii_digit())
                    {
                        k += 1;
                        continue;
                    }
                    break;
                }
                k += if takes_value.contains(&w.as_str()) {
                    2
                } else {
                    1
                };
            }
            k
        });
    let writes = std::mem::take(&mut c.writes);
    let mut whole = c.clone();
    whole.writes = writes;
    out.commands.push(whole);
    if let Some(k) = inner
        && k < c.words.len()
    {
        let sub = SimpleCommand {
            words: c.words.get(k..).unwrap_or_default().to_vec(),
            dynamic: c.dynamic.get(k..).unwrap_or_default().to_vec(),
            writes: vec![],
        };
        command(sub, depth + 1, out);
    }
}

/// The script after `flag` (`-c`, possibly in a cluster such as `-lc`).
fn script_of(c: &SimpleCommand, flag: &str) -> Option<(String, bool)> {
    let letter = flag.trim_start_matches('-');
    let pos = c.words.iter().skip(1).position(|w| {
        w == flag
            || (w.starts_with('-')
                && !w.starts_with("--")
                && w.get(1..).is_some_and(|l| l.contains(letter)))
    })?;
    let k = pos + 2;
    Some((
        c.words.get(k)?.clone(),
        c.dynamic.get(k).copied().unwrap_or(false),
    ))
}

/// Whether the script starts an interactive shell: a shell without `-c`
/// and without a script file (or with `-i`/`-s`), `su` without `-c`, or
/// `sudo -i`/`-s`.
pub fn starts_shell(s: &Script) -> bool {
    s.commands.iter().any(|c| {
        let Some(p) = c.program() else { return false };
        let args: Vec<&String> = c.words.iter().skip(1).collect();
        let operands = args.iter().filter(|w| !w.starts_with('-')).count();
        if SHELLS.contains(&p) {
            let interactive = c.has_option("-i");
            let command = args
                .iter()
                .any(|w| w.starts_with('-') && !w.starts_with("--") && w.contains('c'));
            return !command && (operands == 0 || interactive || c.has_option("-s"));
        }
        match p {
            "su" => !c.has_option("-c") && !c.has_option("--command"),
            "sudo" => {
                c.has_option("-i")
                    || c.has_option("-s")
                    || c.has_option("--login")
                    || c.has_option("--shell")
            }
            _ => false,
        }
    })
}

/// Files a script writes, as written: output redirections, `tee` and
/// `dd of=` operands, the target of a legacy `scp -t`. Dynamic ones are
/// marked.
pub fn written_files(s: &Script) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    for c in &s.commands {
        for (op, target, dynamic) in &c.writes {
            if op != "<" && target != "/dev/null" {
                out.push((target.clone(), *dynamic));
            }
        }
        let operands = || {
            c.words
                .iter()
                .zip(c.dynamic.iter())
                .skip(1)
                .filter(|(w, _)| !w.starts_with('-'))
        };
        match c.program() {
            Some("tee") => out.extend(operands().map(|(w, d)| (w.clone(), *d))),
            Some("dd") => out.extend(
                operands().filter_map(|(w, d)| w.strip_prefix("of=").map(|p| (p.to_string(), *d))),
            ),
            Some("scp") if c.has_option("-t") => {
                if let Some((w, d)) = operands().next_back() {
                    out.push((w.clone(), *d));
                }
            }
            _ => {}
        }
    }
    out
}

/// Files a legacy `scp -f` sends.
pub fn read_files(s: &Script) -> Vec<(String, bool)> {
    s.commands
        .iter()
        .filter(|c| c.program() == Some("scp") && c.has_option("-f"))
        .flat_map(|c| {
            c.words
                .iter()
                .zip(c.dynamic.iter())
                .skip(1)
                .filter(|(w, _)| !w.starts_with('-'))
                .map(|(w, d)| (w.clone(), *d))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn programs(line: &str) -> Vec<String> {
        split(line)
            .commands
            .iter()
            .map(|c| c.words.join(" "))
            .collect()
    }

    #[test]
    fn commands_are_split_as_the_shell_does() {
        assert_eq!(programs("rm -rf /x"), vec!["rm -rf /x"]);
        assert_eq!(
            programs("cd /tmp && r'm' -r -f x; ls | wc -l"),
            vec!["cd /tmp", "rm -r -f x", "ls", "wc -l"]
        );
        assert_eq!(
            programs("sh -c 'rm -rf /x'"),
            vec!["rm -rf /x", "sh -c rm -rf /x"]
        );
        assert_eq!(
            programs("bash -lc \"find / -delete\""),
            vec!["find / -delete", "bash -lc find / -delete"]
        );
        assert_eq!(
            programs("echo $(rm -rf /x)"),
            vec!["rm -rf /x", "echo $(...)"]
        );
        assert_eq!(
            programs("echo `rm -fr /x`"),
            vec!["rm -fr /x", "echo `...`"]
        );
        assert_eq!(
            programs("sudo -u root rm -rf /x"),
            vec!["sudo -u root rm -rf /x", "rm -rf /x"]
        );
        assert_eq!(
            programs("FOO=1 env -i X=2 nohup rm -rf /"),
            vec!["env -i X=2 nohup rm -rf /", "nohup rm -rf /", "rm -rf /"]
        );
        assert_eq!(
            programs("(cd /; rm -rf x) & wait"),
            vec!["cd /", "rm -rf x", "wait"]
        );
        assert_eq!(
            programs("echo 'a; rm -rf /' # rm -rf /"),
            vec!["echo a; rm -rf /"]
        );
        assert_eq!(
            programs("eval 'rm -rf /x'"),
            vec!["rm -rf /x", "eval rm -rf /x"]
        );
        assert!(split("echo 'oops").unreadable.is_some());
        assert!(split("$CMD -rf /").unreadable.is_some());
        assert!(split("rm -rf /x").unreadable.is_none());
    }

    #[test]
    fn options_are_found_in_clusters_and_long_forms() {
        let c = |line: &str| split(line).commands.remove(0);
        assert!(c("rm -fr x").has_option("-r"));
        assert!(c("rm -r -f x").has_option("-f"));
        assert!(c("rm -Rf x").has_option("-R"));
        assert!(c("rm --recursive x").has_option("--recursive"));
        assert!(!c("rm -f x").has_option("-r"));
        assert!(
            !c("rm -- -r").has_option("-r"),
            "after -- there are no options"
        );
        assert!(c("find / -delete").has_option("-delete"));
        assert!(
            c("rm $FLAGS x").has_option("-r"),
            "a dynamic word may be any option"
        );
    }

    #[test]
    fn shells_and_written_files_are_recognised() {
        assert!(starts_shell(&split("bash")));
        assert!(starts_shell(&split("exec bash -l")));
        assert!(starts_shell(&split("/bin/sh -i")));
        assert!(starts_shell(&split("sudo -i")));
        assert!(starts_shell(&split("su -")));
        assert!(!starts_shell(&split("bash -c 'ls'")));
        assert!(!starts_shell(&split("bash deploy.sh")));
        assert!(!starts_shell(&split("ls -la")));
        let files = |l: &str| {
            written_files(&split(l))
                .into_iter()
                .map(|(f, _)| f)
                .collect::<Vec<_>>()
        };
        assert_eq!(files("echo x > /etc/motd"), vec!["/etc/motd"]);
        assert_eq!(files("echo x >>/etc/motd 2>&1"), vec!["/etc/motd"]);
        assert_eq!(
            files("echo x | sudo tee -a /etc/a /etc/b"),
            vec!["/etc/a", "/etc/b"]
        );
        assert_eq!(files("dd if=/dev/zero of=/dev/sda bs=1M"), vec!["/dev/sda"]);
        assert_eq!(files("scp -t /etc/x"), vec!["/etc/x"]);
        assert_eq!(files("scp -r -d -t -- /srv/app"), vec!["/srv/app"]);
        assert_eq!(files("ls > /dev/null"), Vec::<String>::new());
        assert_eq!(read_files(&split("scp -f /etc/shadow")).len(), 1);
        assert!(
            written_files(&split("echo x > $HOME/f"))[0].1,
            "dynamic target"
        );
    }
}
